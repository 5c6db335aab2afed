//! JWT validation per endpoint, `extra_config."auth/validator"` (KrakenD's keys): the token
//! from `Authorization: Bearer` or the cookie `cookie_key` (an EventSource cannot set
//! headers, so cookies are how browsers authenticate streams), verified against the keys of
//! a JWK set, with `exp`, `audience` and `issuer` checked. The set is a local file
//! (`jwk_local_path`) or a URL (`jwk_url`, http or https), fetched before the gateway serves
//! and again every `cache_duration`; a failed refresh keeps the keys it had. 401 for a missing, bad or
//! expired token; 403 when none of `roles` is in the claim `roles_key` (dots walk nested
//! objects, as in `realm_access.roles`).

use std::str::FromStr;

use http::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::{Answer, RequestInfo};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    alg: Option<String>,
    jwk_local_path: Option<String>,
    jwk_url: Option<String>,
    audience: Option<Vec<String>>,
    issuer: Option<String>,
    roles_key: Option<String>,
    roles: Option<Vec<String>>,
    cookie_key: Option<String>,
    /// Keys from a URL are always cached; accepted for KrakenD compatibility.
    cache: Option<bool>,
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    cache_duration: Option<std::time::Duration>,
}

type Keys = Vec<(Option<String>, DecodingKey)>;

/// Where a URL-keyed validator gets its keys, and how often.
#[derive(Debug, Clone)]
pub struct KeySource {
    pub url: http::Uri,
    pub every: std::time::Duration,
}

pub struct Validator {
    /// Swapped whole when a URL's set is fetched again.
    keys: std::sync::RwLock<std::sync::Arc<Keys>>,
    source: Option<KeySource>,
    validation: Validation,
    roles_key: String,
    roles: Vec<String>,
    cookie_key: Option<String>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("source", &self.source)
            .field("roles", &self.roles)
            .finish()
    }
}

impl Validator {
    /// Loads the key set; the error names the key of the block at fault.
    pub fn new(config: JwtConfig) -> Result<Self, (String, String)> {
        let alg = config.alg.as_deref().unwrap_or("RS256");
        let alg = Algorithm::from_str(alg).map_err(|_| {
            (
                "alg".to_owned(),
                format!("{alg:?} is not a supported algorithm"),
            )
        })?;
        let (keys, source) = match (config.jwk_local_path, config.jwk_url) {
            (Some(path), None) => {
                let at =
                    |message: String| ("jwk_local_path".to_owned(), format!("{path}: {message}"));
                let text = std::fs::read_to_string(&path).map_err(|e| at(e.to_string()))?;
                (parse_keys(&text).map_err(at)?, None)
            }
            (None, Some(url)) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| ("jwk_url".to_owned(), format!("{url:?}: {e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(("jwk_url".into(), format!("{url:?} is not an http(s) URL")));
                }
                let every = config
                    .cache_duration
                    .unwrap_or(std::time::Duration::from_secs(15 * 60));
                if every.is_zero() {
                    return Err(("cache_duration".into(), "must be more than zero".into()));
                }
                (Vec::new(), Some(KeySource { url: uri, every }))
            }
            (Some(_), Some(_)) => {
                return Err((
                    "jwk_url".into(),
                    "set jwk_local_path or jwk_url, not both".into(),
                ))
            }
            (None, None) => return Err(("jwk_local_path".into(), "missing (or jwk_url)".into())),
        };
        let _ = config.cache;
        let mut validation = Validation::new(alg);
        match &config.audience {
            Some(audience) => validation.set_audience(audience),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            source,
            validation,
            roles_key: config.roles_key.unwrap_or_else(|| "roles".into()),
            roles: config.roles.unwrap_or_default(),
            cookie_key: config.cookie_key,
        })
    }

    pub fn check(&self, request: &RequestInfo<'_>) -> Result<(), Answer> {
        let token = self
            .token(request)
            .ok_or_else(|| unauthorized("no token"))?;
        let header =
            jsonwebtoken::decode_header(&token).map_err(|e| unauthorized(&e.to_string()))?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|(id, _)| id.as_deref() == Some(kid)),
            None => keys.first(),
        }
        .map(|(_, key)| key)
        .ok_or_else(|| unauthorized("unknown key id (or the key set is not loaded)"))?;
        let data = jsonwebtoken::decode::<Value>(&token, key, &self.validation)
            .map_err(|e| unauthorized(&e.to_string()))?;
        if self.roles.is_empty() || self.has_a_role(&data.claims) {
            Ok(())
        } else {
            Err(Answer::new(
                StatusCode::FORBIDDEN,
                "missing a required role\n",
            ))
        }
    }

    /// Where this validator fetches its keys, if from a URL.
    pub fn key_source(&self) -> Option<&KeySource> {
        self.source.as_ref()
    }

    /// Replaces the keys with the set in `jwks` (JSON); returns how many there are.
    pub fn set_keys(&self, jwks: &str) -> Result<usize, String> {
        let keys = parse_keys(jwks)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(keys);
        Ok(count)
    }

    fn token(&self, request: &RequestInfo<'_>) -> Option<String> {
        if let Some(name) = &self.cookie_key {
            let cookie = request.headers.get("cookie").unwrap_or_default();
            if let Some(token) = wire::cookie(cookie, name) {
                return Some(String::from_utf8_lossy(token).into_owned());
            }
        }
        let authorization = request.headers.get("authorization")?;
        let token = authorization
            .strip_prefix(b"Bearer ")
            .or_else(|| authorization.strip_prefix(b"bearer "))?;
        Some(String::from_utf8_lossy(token.trim_ascii()).into_owned())
    }

    fn has_a_role(&self, claims: &Value) -> bool {
        let found = self
            .roles_key
            .split('.')
            .try_fold(claims, |value, key| value.get(key));
        let held: Vec<&str> = match found {
            Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(roles)) => roles.split(' ').collect(),
            _ => Vec::new(),
        };
        self.roles.iter().any(|role| held.contains(&role.as_str()))
    }
}

fn parse_keys(jwks: &str) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| format!("not a JWK set: {e}"))?;
    let keys = set
        .keys
        .iter()
        .map(|jwk| {
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
            Ok((jwk.common.key_id.clone(), key))
        })
        .collect::<Result<Keys, String>>()?;
    if keys.is_empty() {
        return Err("the set has no keys".into());
    }
    Ok(keys)
}

fn unauthorized(why: &str) -> Answer {
    let mut answer = Answer::new(StatusCode::UNAUTHORIZED, format!("invalid token: {why}\n"));
    answer.headers.push(("WWW-Authenticate", "Bearer".into()));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    /// A P-256 key made for this test with openssl; the JWK holds its public half.
    const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcTenSRUSiW2LIIXG
asu/5MIwVaNo+IDdpYZvtqu3UzqhRANCAATu+GWXQqHgSEUEsUTBqPzA4oiMRj5k
Y59axyZT9EPn7H/XPenjYo+OirbqUDjRqu3DeO9bCeqtiaAO2XaR5gxE
-----END PRIVATE KEY-----";

    fn validator(extra: serde_json::Value) -> Validator {
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
            "x": "7vhll0Kh4EhFBLFEwaj8wOKIjEY-ZGOfWscmU_RD5-w",
            "y": "f9c96eNij46KtupQONGq7cN471sJ6q2JoA7ZdpHmDEQ"}]});
        let path = std::env::temp_dir().join(format!("jwks-{}.json", std::process::id()));
        std::fs::write(&path, jwks.to_string()).unwrap();
        let mut config = json!({"alg": "ES256", "jwk_local_path": path});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        Validator::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn status(validator: &Validator, claims: serde_json::Value) -> u16 {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("ec1".into());
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
        let token = encode(&header, &claims, &key).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let request = RequestInfo {
            method: "GET",
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            headers: &headers,
        };
        validator
            .check(&request)
            .map_or_else(|a| a.status.as_u16(), |()| 200)
    }

    #[test]
    fn es256_with_audience_issuer_and_nested_roles() {
        let v = validator(json!({"audience": ["api"], "issuer": "https://idp",
            "roles_key": "realm_access.roles", "roles": ["admin"]}));
        let exp = 4_000_000_000u64;
        let good = json!({"aud": "api", "iss": "https://idp", "exp": exp, "realm_access": {"roles": ["admin"]}});
        assert_eq!(status(&v, good.clone()), 200);
        let mut wrong_audience = good.clone();
        wrong_audience["aud"] = json!("other");
        assert_eq!(status(&v, wrong_audience), 401);
        let mut wrong_issuer = good.clone();
        wrong_issuer["iss"] = json!("https://evil");
        assert_eq!(status(&v, wrong_issuer), 401);
        let mut no_role = good;
        no_role["realm_access"]["roles"] = json!(["user"]);
        assert_eq!(status(&v, no_role), 403);
    }
}
