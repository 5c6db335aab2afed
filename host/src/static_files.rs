//! The built-in `static-filesystem` server plugin (KrakenD Enterprise's name and keys):
//! `GET` and `HEAD` under `prefix` (a route of the host's table, [`crate::route`]) serve the
//! files under `path`, `index.html` for a directory. Paths that climb out of `path` (`..`, backslashes, NUL) are refused with 404,
//! so nothing outside the folder is reachable.

use std::path::PathBuf;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};

use crate::config;
use crate::pipeline::{self, Body};

/// Files larger than this are not served (the files are read whole).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

pub struct StaticFiles {
    root: PathBuf,
}

impl StaticFiles {
    pub fn new(config: &config::StaticFiles) -> Self {
        Self {
            root: config.path.clone(),
        }
    }

    /// The response to `GET` or `HEAD` (the methods the route takes) of `rest`, the path
    /// below the prefix.
    pub async fn serve(&self, method: &Method, rest: &str) -> Response<Body> {
        let not_found = || pipeline::text(StatusCode::NOT_FOUND, "404 page not found\n");
        let Some(file) = self.file_for(rest) else {
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

    /// The file a request path names, if it stays inside the root.
    fn file_for(&self, rest: &str) -> Option<PathBuf> {
        let mut file = self.root.clone();
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            if segment == "." || segment == ".." || segment.contains(['\\', '\0']) {
                return None;
            }
            file.push(segment);
        }
        if rest.is_empty() || rest.ends_with('/') {
            file.push("index.html");
        }
        Some(file)
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

    fn files() -> StaticFiles {
        StaticFiles::new(&config::StaticFiles {
            prefix: "/www/".into(),
            path: "/srv/www".into(),
        })
    }

    #[test]
    fn paths_stay_inside_the_folder() {
        let files = files();
        assert_eq!(files.file_for(""), Some("/srv/www/index.html".into()));
        assert_eq!(files.file_for("/"), Some("/srv/www/index.html".into()));
        assert_eq!(files.file_for("a/b.js"), Some("/srv/www/a/b.js".into()));
        assert_eq!(files.file_for("a/"), Some("/srv/www/a/index.html".into()));
        for escape in ["../etc/passwd", "a/../../x", "a\\..\\x", "./x", "/../x"] {
            assert_eq!(files.file_for(escape), None, "{escape}");
        }
    }
}
