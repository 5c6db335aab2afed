//! JWT validation per endpoint, `extra_config."auth/validator"` (KrakenD's keys): the token
//! from `Authorization: Bearer` or the cookie `cookie_key` (an EventSource cannot set
//! headers, so cookies are how browsers authenticate streams), verified against the keys of
//! a JWK set. The set is a local file (`jwk_local_path`) or a URL (`jwk_url`, http or
//! https), fetched before the gateway serves and again every `cache_duration`; a failed
//! refresh keeps the keys it had.
//!
//! The claims are checked fully: `exp` is required and must not be past, `nbf` and `iat`
//! must not be in the future, each within `leeway` of clock skew; with `audience` or
//! `issuer` configured, a token must carry that claim with an allowed value (a token
//! without it is refused, not waved through). 401 for a missing, bad or expired token,
//! saying only that (the reason goes to the log); 403 when none of `roles` is in the claim
//! `roles_key` (dots walk nested objects, as in `realm_access.roles`). A token that passes
//! is valid until its `exp` plus the leeway, which a handed-over stream is told.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The clock skew allowed on `exp`, `nbf` and `iat`, in whole seconds.
    #[serde(default, deserialize_with = "config_values::duration::deserialize_opt")]
    leeway: Option<std::time::Duration>,
}

/// The clock skew allowed between the token's issuer and the gateway: a minute, as
/// jsonwebtoken and most validators default to; larger lets an expired token live longer.
const DEFAULT_LEEWAY: std::time::Duration = std::time::Duration::from_secs(60);

/// A token that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorised {
    /// Its `exp` plus the leeway, in Unix seconds: when the validator stops accepting it.
    pub valid_until: u64,
}

impl Authorised {
    /// How long from `now` the token is still accepted.
    pub fn valid_for(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Duration::from_secs(self.valid_until).saturating_sub(now)
    }
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
    /// `validation.leeway`, in seconds.
    leeway_secs: u64,
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
        let leeway = config.leeway.unwrap_or(DEFAULT_LEEWAY);
        if leeway.subsec_nanos() != 0 {
            return Err((
                "leeway".into(),
                format!("{leeway:?} is not a whole number of seconds (JWT times are in seconds)"),
            ));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = leeway.as_secs();
        // jsonwebtoken checks `nbf` only when asked, and `aud` and `iss` only when the
        // token has them: a token without the claim would pass a configured check.
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &config.audience {
            Some(audience) => {
                validation.set_audience(audience);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            source,
            leeway_secs: validation.leeway,
            validation,
            roles_key: config.roles_key.unwrap_or_else(|| "roles".into()),
            roles: config.roles.unwrap_or_default(),
            cookie_key: config.cookie_key,
        })
    }

    /// The token's verdict: 401 or 403 with the reason logged, or until when it is valid.
    pub fn check(&self, request: &RequestInfo<'_>) -> Result<Authorised, Answer> {
        let Some(token) = self.token(request) else {
            return Err(unauthorized("token required\n"));
        };
        let claims = self.claims(&token).map_err(|reason| {
            tracing::info!("[JWT] {}: invalid token: {reason}", request.peer);
            unauthorized("invalid token\n")
        })?;
        if !self.roles.is_empty() && !self.has_a_role(&claims.value) {
            return Err(Answer::new(
                StatusCode::FORBIDDEN,
                "missing a required role\n",
            ));
        }
        Ok(Authorised {
            valid_until: claims.exp.saturating_add(self.leeway_secs),
        })
    }

    /// The claims of a token with a valid signature and valid times, or why not.
    fn claims(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|(id, _)| id.as_deref() == Some(kid)),
            None => keys.first(),
        }
        .map(|(_, key)| key)
        .ok_or("unknown key id (or the key set is not loaded)")?;
        let value = jsonwebtoken::decode::<Value>(token, key, &self.validation)
            .map_err(|e| e.to_string())?
            .claims;
        // jsonwebtoken has required `exp` as a number.
        let exp = seconds(&value["exp"]).ok_or("exp is not a number of seconds")?;
        // It skips an `nbf` that is not a number, and does not look at `iat` at all: both
        // are checked here.
        for claim in ["nbf", "iat"] {
            if !value[claim].is_null() && seconds(&value[claim]).is_none() {
                return Err(format!("{claim} is not a number of seconds"));
            }
        }
        if let Some(iat) = seconds(&value["iat"]) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if iat > now.saturating_add(self.leeway_secs) {
                return Err(format!("issued in the future (iat {iat}, now {now})"));
            }
        }
        Ok(Claims { value, exp })
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

/// A token's claims, with its `exp`.
struct Claims {
    value: Value,
    exp: u64,
}

/// A NumericDate claim as whole seconds (fractions are allowed and dropped).
fn seconds(claim: &Value) -> Option<u64> {
    claim
        .as_u64()
        .or_else(|| claim.as_f64().filter(|s| *s >= 0.0).map(|s| s as u64))
}

fn unauthorized(body: &'static str) -> Answer {
    let mut answer = Answer::new(StatusCode::UNAUTHORIZED, body);
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
        config(extra).unwrap()
    }

    fn config(extra: serde_json::Value) -> Result<Validator, (String, String)> {
        // Written once: the tests run in parallel, and a rewrite would race their reads.
        static JWKS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let path = JWKS.get_or_init(|| {
            let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256",
                "x": "7vhll0Kh4EhFBLFEwaj8wOKIjEY-ZGOfWscmU_RD5-w",
                "y": "f9c96eNij46KtupQONGq7cN471sJ6q2JoA7ZdpHmDEQ"}]});
            let path = std::env::temp_dir().join(format!("jwks-{}.json", std::process::id()));
            std::fs::write(&path, jwks.to_string()).unwrap();
            path
        });
        let mut config = json!({"alg": "ES256", "jwk_local_path": path});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        Validator::new(serde_json::from_value(config).unwrap())
    }

    fn verdict(validator: &Validator, claims: serde_json::Value) -> Result<Authorised, Answer> {
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
        validator.check(&request)
    }

    fn status(validator: &Validator, claims: serde_json::Value) -> u16 {
        verdict(validator, claims).map_or_else(|a| a.status.as_u16(), |_| 200)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
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

    #[test]
    fn a_configured_audience_or_issuer_must_be_in_the_token() {
        let v = validator(json!({"audience": ["api"], "issuer": "https://idp"}));
        let exp = now() + 3600;
        assert_eq!(
            status(&v, json!({"aud": "api", "iss": "https://idp", "exp": exp})),
            200
        );
        assert_eq!(status(&v, json!({"iss": "https://idp", "exp": exp})), 401);
        assert_eq!(status(&v, json!({"aud": "api", "exp": exp})), 401);
        assert_eq!(
            status(&v, json!({"aud": 7, "iss": "https://idp", "exp": exp})),
            401
        );
        // Neither configured: neither is required.
        assert_eq!(status(&validator(json!({})), json!({"exp": exp})), 200);
        assert_eq!(status(&validator(json!({})), json!({})), 401, "exp is");
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused_beyond_the_leeway() {
        let v = validator(json!({"leeway": "30s"}));
        let (now, exp) = (now(), now() + 3600);
        for claim in ["nbf", "iat"] {
            let at = |t: u64| json!({"exp": exp, claim: t});
            assert_eq!(status(&v, at(now)), 200, "{claim}");
            assert_eq!(status(&v, at(now + 20)), 200, "{claim} within the leeway");
            assert_eq!(status(&v, at(now + 120)), 401, "{claim} in the future");
            assert_eq!(
                status(&v, json!({"exp": exp, claim: "soon"})),
                401,
                "{claim}"
            );
        }
    }

    #[test]
    fn the_leeway_bounds_exp_and_how_long_a_token_is_valid() {
        let now = now();
        let strict = validator(json!({"leeway": "0s"}));
        assert_eq!(status(&strict, json!({"exp": now - 5})), 401);
        let lenient = validator(json!({}));
        assert_eq!(
            status(&lenient, json!({"exp": now - 5})),
            200,
            "60s by default"
        );
        assert_eq!(status(&lenient, json!({"exp": now - 120})), 401);
        let authorised = verdict(&strict, json!({"exp": now + 2})).unwrap();
        assert_eq!(authorised.valid_until, now + 2);
        let at = UNIX_EPOCH + Duration::from_secs(now);
        assert_eq!(authorised.valid_for(at), Duration::from_secs(2));
        assert_eq!(
            authorised.valid_for(at + Duration::from_secs(9)),
            Duration::ZERO
        );
        let authorised = verdict(&lenient, json!({"exp": now + 2})).unwrap();
        assert_eq!(authorised.valid_until, now + 62);
        assert_eq!(
            config(json!({"leeway": "1500ms"})).unwrap_err().0,
            "leeway",
            "whole seconds only"
        );
    }

    #[test]
    fn a_refusal_says_only_that_the_token_is_invalid() {
        let v = validator(json!({"issuer": "https://idp"}));
        let answer = verdict(&v, json!({"exp": now() + 60, "iss": "https://evil"})).unwrap_err();
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (401, "invalid token\n")
        );
        assert_eq!(answer.headers, [("WWW-Authenticate", "Bearer".to_owned())]);
    }
}
