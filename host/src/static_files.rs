//! The built-in `static-filesystem` server plugin (KrakenD Enterprise's name and keys):
//! `GET` and `HEAD` under `prefix` (a route of the host's table, [`crate::route`]) serve the
//! files under `path`, `index.html` for a directory. Only regular files inside the folder are served, everything else is 404:
//! a request path that climbs (`..`, backslashes, NUL) or names a dotfile or dot-directory
//! (`.env`, `.git/config`) is refused as it is read, and the file it names is resolved
//! (symlinks followed) and served only if it is still inside the folder, by the same rules.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::config;
use crate::pipeline::{self, Body};

/// Files larger than this are not served (the files are read whole).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

pub struct StaticFiles {
    /// The folder, resolved once: where every served file must really be.
    root: PathBuf,
}

impl StaticFiles {
    /// Fails when the folder cannot be resolved (it does not exist, say).
    pub fn new(config: &config::StaticFiles) -> std::io::Result<Self> {
        Ok(Self {
            root: std::fs::canonicalize(&config.path)?,
        })
    }

    /// The response to `GET` or `HEAD` (the methods the route takes) of `rest`, the path
    /// below the prefix.
    pub async fn serve(&self, method: &Method, rest: &str) -> Response<Body> {
        let not_found = || pipeline::text(StatusCode::NOT_FOUND, "404 page not found\n");
        let Some(file) = self.file_for(rest) else {
            return not_found();
        };
        // Read where it really is, so a symlink swapped in meanwhile is not followed.
        let Some(file) = self.resolve(&file).await else {
            return not_found();
        };
        let fits = tokio::fs::metadata(&file)
            .await
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_FILE_BYTES);
        let contents = match fits {
            true => tokio::fs::read(&file).await.ok(),
            false => None,
        };
        let Some(contents) = contents else {
            return not_found();
        };
        let length = contents.len();
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(contents)
        };
        let mut response = Response::new(pipeline::full(body));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type(&file));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }

    /// The file a request path names, if it stays inside the root and names no dotfile.
    fn file_for(&self, rest: &str) -> Option<PathBuf> {
        let mut file = self.root.clone();
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            // A leading dot covers `.` and `..` too.
            if segment.starts_with('.') || segment.contains(['\\', '\0']) {
                return None;
            }
            file.push(segment);
        }
        if rest.is_empty() || rest.ends_with('/') {
            file.push("index.html");
        }
        Some(file)
    }

    /// Where `file` really is, symlinks followed, if that is inside the root too.
    async fn resolve(&self, file: &Path) -> Option<PathBuf> {
        let real = tokio::fs::canonicalize(file).await.ok()?;
        self.holds(&real).then_some(real)
    }

    /// Whether a resolved path lies inside the root with no dot-name on the way.
    fn holds(&self, real: &Path) -> bool {
        real.strip_prefix(&self.root).is_ok_and(|inside| {
            inside.components().all(|part| match part {
                Component::Normal(name) => !name.as_encoded_bytes().starts_with(b"."),
                _ => false,
            })
        })
    }
}

fn content_type(file: &std::path::Path) -> HeaderValue {
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    HeaderValue::from_static(match extension {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rooted at `/srv/www`, which need not exist for the pure checks.
    fn files() -> StaticFiles {
        StaticFiles {
            root: "/srv/www".into(),
        }
    }

    #[test]
    fn paths_stay_inside_the_folder() {
        let files = files();
        assert_eq!(files.file_for(""), Some("/srv/www/index.html".into()));
        assert_eq!(files.file_for("/"), Some("/srv/www/index.html".into()));
        assert_eq!(files.file_for("/a/b.js"), Some("/srv/www/a/b.js".into()));
        // As the route captures it, below the prefix.
        assert_eq!(files.file_for("a/b.js"), Some("/srv/www/a/b.js".into()));
        assert_eq!(files.file_for("a/"), Some("/srv/www/a/index.html".into()));
        assert_eq!(files.file_for("/a.b/c.d"), Some("/srv/www/a.b/c.d".into()));
        for refused in [
            "/../etc/passwd",
            "/a/../../x",
            "/a\\..\\x",
            "/./x",
            "/.env",
            "/.git/config",
            "/a/.hidden/x",
            "/x\0",
        ] {
            assert_eq!(files.file_for(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_resolved_path_must_lie_inside_the_root_with_no_dot_names() {
        let files = files();
        assert!(files.holds(Path::new("/srv/www/index.html")));
        assert!(files.holds(Path::new("/srv/www/a/b.js")));
        for outside in [
            "/srv/www-other/x",
            "/etc/passwd",
            "/srv/www/.env",
            "/srv/www/a/.git/config",
        ] {
            assert!(!files.holds(Path::new(outside)), "{outside}");
        }
    }
}
