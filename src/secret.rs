//! Values that must never reach a log, an error or the start-up configuration
//! line unredacted: a shared secret ([`Secret`]) and a URL that may carry
//! credentials in its user info or query ([`SecretUrl`]). Their `Debug`,
//! `Display` and `Serialize` show only the redacted form; the raw value is
//! reachable only through `expose()`, which names every place that sends it.
//! A type, not a list of JSON paths to remember: a new field of either type is
//! redacted wherever it is printed.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shared secret (a webhook's HMAC key): printed as `***`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it (signing).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL that may carry a password (`user:pass@`) or a token in its query
/// (`?token=…`): printed as [`redact_url`] gives it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> SecretUrl {
        SecretUrl(value.into())
    }

    /// The URL itself, for the places that connect to it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its secrets, for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> SecretUrl {
        SecretUrl(s)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> SecretUrl {
        SecretUrl(s.to_string())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretUrl, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

/// The URL without secrets, for logs and errors: the password of `user:pass@`
/// (a user info without a colon, often a token on its own, entirely), the value
/// of any query parameter whose name says password, secret, token, key,
/// signature, auth or code, and — for http(s) URLs — every path segment after
/// the first (webhook URLs such as Slack's carry their secret in the path).
pub fn redact_url(url: &str) -> String {
    // A fragment never leaves the client, but may hold a token all the same.
    let url = url.split('#').next().unwrap_or_default();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &base[..s], &base[at..]),
                None => format!("{}://***{}", &base[..s], &base[at..]),
            }
        }
        _ => base.to_string(),
    };
    let base = elide_deep_path(&base);
    let Some(query) = query else { return base };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// `http(s)://host/a/b/c` -> `http(s)://host/a/…`.
fn elide_deep_path(base: &str) -> String {
    let Some(rest) = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
    else {
        return base.to_string();
    };
    let scheme_len = base.len() - rest.len();
    let Some(slash) = rest.find('/') else {
        return base.to_string();
    };
    let path = &rest[slash + 1..];
    match path.split_once('/') {
        Some((first, more)) if !more.is_empty() => {
            format!("{}/{first}/…", &base[..scheme_len + slash])
        }
        _ => base.to_string(),
    }
}

fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key", "sig", "auth", "code"]
        .iter()
        .any(|w| k.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_in_userinfo_and_query() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        let r = redact_url("postgres://postgres@127.0.0.1:5432/db?password=sekret&sslmode=require");
        assert!(!r.contains("sekret"), "{r}");
        assert!(r.contains("sslmode=require"), "{r}");
        assert_eq!(redact_url("sqlite:///tmp/q.db"), "sqlite:///tmp/q.db");
        let r = redact_url("http://user:hunter2@h/hook?token=abc&x=1#access_token=zz");
        assert_eq!(r, "http://user:***@h/hook?token=***&x=1");
        assert_eq!(redact_url("http://s3cr3t@h:8/x"), "http://***@h:8/x");
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXXsecret"),
            "https://hooks.slack.com/services/…"
        );
        assert_eq!(redact_url("http://fhir.local/R4"), "http://fhir.local/R4");
        assert_eq!(redact_url("http://h/fhir/R4"), "http://h/fhir/…");
    }

    #[test]
    fn secrets_print_redacted_everywhere() {
        let url = SecretUrl::new("http://user:hunter2@h/hook?token=abc123");
        let secret = Secret::new("whsec-canary");
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
            format!("{secret}"),
            format!("{secret:?}"),
            serde_json::to_string(&secret).unwrap(),
        ] {
            assert!(
                !shown.contains("hunter2")
                    && !shown.contains("abc123")
                    && !shown.contains("canary"),
                "{shown}"
            );
        }
        assert_eq!(url.expose(), "http://user:hunter2@h/hook?token=abc123");
        assert_eq!(secret.expose(), "whsec-canary");
        let back: SecretUrl = serde_json::from_str("\"http://a:b@h\"").unwrap();
        assert_eq!(back.expose(), "http://a:b@h");
    }
}
