//! Where an S3 store is and who we are to it: the `s3:http://` spec, the key
//! pair and the region, read from the environment the caller passes (see the
//! parent module's docs for the forms and the credentials file).

use super::sigv4;
use std::io::Read;

/// The largest credentials file read.
const MAX_CREDENTIALS_FILE: u64 = 4 << 10;
/// The region used when the environment names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where a bucket is: restic's `s3:http://HOST[:PORT]/BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// `HOST[:PORT]`, as given.
    pub authority: String,
    pub bucket: String,
    /// The key prefix every key is under, without leading or trailing `/`;
    /// empty for the whole bucket.
    pub prefix: String,
    /// `http://BUCKET.HOST/KEY` rather than `http://HOST/BUCKET/KEY`.
    pub virtual_host: bool,
}

fn usage(msg: String) -> crate::Error {
    crate::Error::Usage(msg)
}

impl S3Spec {
    /// Parses `s3:http://HOST[:PORT]/BUCKET[/PREFIX]` (path-style).
    pub fn parse(spec: &str) -> crate::Result<S3Spec> {
        let Some(url) = spec.strip_prefix("s3:") else {
            return Err(usage(format!(
                "{spec}: an S3 store is s3:http://HOST[:PORT]/BUCKET[/PREFIX]"
            )));
        };
        if url.starts_with("https://") {
            return Err(usage(format!(
                "{spec}: this build of chute has no TLS; use s3:http:// on a network you trust (the data is sealed), or a TLS-terminating proxy on this machine"
            )));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(usage(format!(
                "{spec}: an S3 store is s3:http://HOST[:PORT]/BUCKET[/PREFIX]"
            )));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_authority(authority).map_err(|why| usage(format!("{spec}: {why}")))?;
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket).map_err(|why| usage(format!("{spec}: {why}")))?;
        if prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
            && !prefix.is_empty()
        {
            return Err(usage(format!(
                "{spec}: the prefix has an empty, '.' or '..' segment"
            )));
        }
        if prefix.len() > 512 || prefix.chars().any(char::is_control) {
            return Err(usage(format!(
                "{spec}: the prefix is longer than 512 bytes or has a control character"
            )));
        }
        Ok(S3Spec {
            authority: authority.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            virtual_host: false,
        })
    }

    /// This spec with virtual-host addressing on or off.
    pub fn virtual_host(mut self, yes: bool) -> S3Spec {
        self.virtual_host = yes;
        self
    }

    /// The `Host` requests are sent to (and signed for).
    pub(super) fn host(&self) -> String {
        if self.virtual_host {
            format!("{}.{}", self.bucket, self.authority)
        } else {
            self.authority.clone()
        }
    }

    /// The full key of `key` (relative to the prefix).
    pub(super) fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The request path (encoded) of a full key, or of the bucket for `None`.
    pub(super) fn path(&self, full_key: Option<&str>) -> String {
        let key = full_key.unwrap_or("");
        if self.virtual_host {
            sigv4::encode_path(key)
        } else if full_key.is_none() {
            sigv4::encode_path(&self.bucket)
        } else {
            sigv4::encode_path(&format!("{}/{key}", self.bucket))
        }
    }
}

impl std::fmt::Display for S3Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:http://{}/{}", self.authority, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

fn check_authority(a: &str) -> std::result::Result<(), String> {
    if a.is_empty() {
        return Err("no host".into());
    }
    if !a
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err(format!("{a:?} is not HOST[:PORT]"));
    }
    if let Some((host, port)) = a.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        if !host.is_empty() && !port.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!("{port:?} is not a port"));
        }
    }
    Ok(())
}

/// S3's bucket naming rules: 3 to 63 of `a-z 0-9 . -`, starting and ending with
/// a letter or digit.
fn check_bucket(b: &str) -> std::result::Result<(), String> {
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if b.len() < 3
        || b.len() > 63
        || !b
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        || !edge(b.bytes().next())
        || !edge(b.bytes().last())
    {
        return Err(format!(
            "{b:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ));
    }
    Ok(())
}

/// An S3 key pair. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// From the environment (see the module docs): the `AWS_*` pair or the
    /// `CHUTE_S3_CREDENTIALS_FILE` when the environment has no pair.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> crate::Result<Credentials> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let id = set("AWS_ACCESS_KEY_ID");
        let secret = set("AWS_SECRET_ACCESS_KEY");
        // The environment's pair wins over the file (as every setting's
        // environment wins over the config file).
        match (set("CHUTE_S3_CREDENTIALS_FILE"), id, secret) {
            (Some(file), None, None) => Credentials::from_file(std::path::Path::new(&file)),
            (_, Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
            }),
            (_, Some(_), None) => Err(usage(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            )),
            (_, None, Some(_)) => Err(usage(
                "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            )),
            (None, None, None) => Err(usage(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or CHUTE_S3_CREDENTIALS_FILE".into(),
            )),
        }
    }

    /// Reads a credentials file (see the module docs for its format).
    pub fn from_file(path: &std::path::Path) -> crate::Result<Credentials> {
        let what = format!("S3 credentials file {}", path.display());
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CREDENTIALS_FILE + 1).read_to_string(&mut text))
            .map_err(|e| crate::Error::Io(what.clone(), e))?;
        if text.len() as u64 > MAX_CREDENTIALS_FILE {
            return Err(usage(format!(
                "{what}: longer than {MAX_CREDENTIALS_FILE} bytes"
            )));
        }
        Credentials::parse(&text).map_err(|why| usage(format!("{what}: {why}")))
    }

    /// Parses the text of a credentials file.
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        let (mut id, mut secret) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = n + 1;
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("line {n} is not `name = value`"));
            };
            let value = value.trim();
            if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("line {n}: the value is empty or has a space"));
            }
            let slot = match name.trim() {
                "access_key_id" => &mut id,
                "secret_access_key" => &mut secret,
                other => {
                    return Err(format!(
                        "line {n}: unknown name {other:?} (access_key_id, secret_access_key)"
                    ));
                }
            };
            if slot.replace(value.to_string()).is_some() {
                return Err(format!("line {n}: {} given twice", name.trim()));
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
                access_key_id,
                secret_access_key,
            }),
            _ => Err("needs both access_key_id and secret_access_key".into()),
        }
    }
}

/// Everything a [`Client`] needs: where, who, which region.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: S3Spec,
    pub credentials: Credentials,
    pub region: String,
}

impl Config {
    /// Parses `spec` and reads credentials and region from `env` (a lookup such
    /// as `|k| std::env::var(k).ok()`; see the module docs).
    pub fn from_env(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> crate::Result<Config> {
        let spec = S3Spec::parse(spec)?;
        let credentials = Credentials::from_env(env)?;
        let region = region_from_env(env);
        if region.is_empty()
            || region.len() > 64
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(usage(format!("S3 region {region:?} is not a region name")));
        }
        Ok(Config {
            spec,
            credentials,
            region,
        })
    }
}

/// `AWS_DEFAULT_REGION`, else `AWS_REGION`, else `CHUTE_S3_REGION` (a setting
/// a config file can hold), else [`DEFAULT_REGION`].
pub fn region_from_env(env: &dyn Fn(&str) -> Option<String>) -> String {
    ["AWS_DEFAULT_REGION", "AWS_REGION", "CHUTE_S3_REGION"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_REGION.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_in_restics_form() {
        let s = S3Spec::parse("s3:http://127.0.0.1:3900/chute-test/a/b/").unwrap();
        assert_eq!(
            s,
            S3Spec {
                authority: "127.0.0.1:3900".into(),
                bucket: "chute-test".into(),
                prefix: "a/b".into(),
                virtual_host: false
            }
        );
        assert_eq!(s.to_string(), "s3:http://127.0.0.1:3900/chute-test/a/b");
        assert_eq!(s.host(), "127.0.0.1:3900");
        assert_eq!(s.path(Some(&s.full_key("x y"))), "/chute-test/a/b/x%20y");
        assert_eq!(s.path(None), "/chute-test");
        let v = S3Spec::parse("s3:http://garage.lan/bkt")
            .unwrap()
            .virtual_host(true);
        assert_eq!(v.prefix, "");
        assert_eq!(v.host(), "bkt.garage.lan");
        assert_eq!(v.path(Some(&v.full_key("k"))), "/k");
        assert_eq!(v.path(None), "/");
        for bad in [
            "http://h/bucket",
            "s3:https://h/bucket",
            "s3:ftp://h/bucket",
            "s3:http:///bucket",
            "s3:http://h",
            "s3:http://h/",
            "s3:http://h/Bucket",
            "s3:http://h/b",
            "s3:http://h/-bucket",
            "s3:http://u@h/bucket",
            "s3:http://h:port/bucket",
            "s3:http://h:99999/bucket",
            "s3:http://h/bucket/a//b",
            "s3:http://h/bucket/../b",
        ] {
            let e = S3Spec::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = S3Spec::parse("s3:https://h/bucket")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no TLS"), "{e}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn credentials_and_region_come_from_the_environment_given() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_REGION", "garage"),
        ]);
        let c = Config::from_env("s3:http://h/bucket", &env).unwrap();
        assert_eq!(c.credentials.access_key_id, "GK1");
        assert_eq!(c.region, "garage");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "garage"),
        ]);
        assert_eq!(region_from_env(&env), "eu-west-1");
        assert_eq!(region_from_env(&env_of(&[])), DEFAULT_REGION);
        let file_only = env_of(&[("CHUTE_S3_REGION", "garage")]);
        assert_eq!(region_from_env(&file_only), "garage");

        let dir = std::env::temp_dir().join(format!("chute-s3-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("creds");
        std::fs::write(
            &file,
            "# garage key\naccess_key_id = GKf\n\nsecret_access_key=sf\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = Credentials::from_env(&env_of(&[("CHUTE_S3_CREDENTIALS_FILE", f)])).unwrap();
        assert_eq!(
            c,
            Credentials {
                access_key_id: "GKf".into(),
                secret_access_key: "sf".into()
            }
        );
        // The environment's pair wins over the file.
        let pairs = [
            ("CHUTE_S3_CREDENTIALS_FILE", f),
            ("AWS_ACCESS_KEY_ID", "GKe"),
            ("AWS_SECRET_ACCESS_KEY", "se"),
        ];
        let both = env_of(&pairs);
        assert_eq!(Credentials::from_env(&both).unwrap().access_key_id, "GKe");
        for env in [
            env_of(&[("CHUTE_S3_CREDENTIALS_FILE", f), ("AWS_ACCESS_KEY_ID", "x")]),
            env_of(&[("AWS_ACCESS_KEY_ID", "x")]),
            env_of(&[("AWS_SECRET_ACCESS_KEY", "x")]),
            env_of(&[]),
            env_of(&[("CHUTE_S3_CREDENTIALS_FILE", "/nonexistent/creds")]),
        ] {
            let e = Credentials::from_env(&env).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert!(Credentials::from_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        for bad in [
            "access_key_id = a\n",
            "access_key_id = a\nsecret_access_key = b\nregion = c\n",
            "access_key_id = a\naccess_key_id = a\nsecret_access_key = b\n",
            "access_key_id a\nsecret_access_key = b\n",
            "access_key_id = a b\nsecret_access_key = b\n",
            "access_key_id =\nsecret_access_key = b\n",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad:?}");
        }
        let bad_region = env_of(&[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_REGION", "us east\n"),
        ]);
        assert!(Config::from_env("s3:http://h/bucket", &bad_region).is_err());
    }
}
