//! AWS Signature Version 4 for S3, header form: pure functions over a request's
//! parts and the time, pinned by AWS's published examples (the tests below).
//!
//! What is signed: the method; the path, each byte outside `A-Za-z0-9-._~/`
//! written `%XX` (S3 does not encode twice, so the path sent is the path signed:
//! [`encode_path`] makes both); the query, names and values encoded the same way
//! with `/` encoded too, sorted by name then value; the headers the caller passes
//! (always `host`, `x-amz-content-sha256` and `x-amz-date`, plus `range` or
//! `x-amz-copy-source` where sent), names lowercased and sorted, values trimmed
//! with inner runs of spaces folded; and the payload's SHA-256, which the caller
//! already has (a window's hash, computed by the sink anyway): signing makes no
//! pass over the body, and the store checks the body against it.
//!
//! A signature is good for 15 minutes around its `x-amz-date` (AWS's rule,
//! Garage's too): over plain HTTP anyone on the path may replay a request that
//! long, which is why the CLI warns (see [`super::PLAIN_HTTP_WARNING`]).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The algorithm named in every `Authorization` header and string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// SHA-256 of nothing: the payload hash of a request without a body.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Who signs, where: the key pair and the credential scope's region and service.
#[derive(Clone)]
pub struct Signer {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub service: String,
}

impl std::fmt::Debug for Signer {
    // The secret never reaches a log or a panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// One request as it is signed. `path` is already encoded ([`encode_path`]);
/// `query` and `headers` are raw (names of headers in any case).
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
}

impl Signer {
    /// The `Authorization` header for `req` at `amz_date` (`YYYYMMDDTHHMMSSZ`, the
    /// `x-amz-date` header's value, which must be among `req.headers`).
    pub fn authorization(&self, req: &Request, amz_date: &str) -> String {
        let (canonical, signed_headers) = canonical_request(req);
        let day = &amz_date[..amz_date.len().min(8)];
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            crate::hex::encode(&Sha256::digest(canonical.as_bytes()))
        );
        let key = self.signing_key(day);
        let signature = crate::hex::encode(&hmac(&key, to_sign.as_bytes()));
        format!(
            "{ALGORITHM} Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
            self.access_key_id
        )
    }

    /// The day's signing key: the secret chained through date, region, service.
    fn signing_key(&self, day: &str) -> [u8; 32] {
        let k = hmac(
            format!("AWS4{}", self.secret_access_key).as_bytes(),
            day.as_bytes(),
        );
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, self.service.as_bytes());
        hmac(&k, b"aws4_request")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The canonical request and its `SignedHeaders` list.
fn canonical_request(req: &Request) -> (String, String) {
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), fold_spaces(v)))
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n{}\n", req.method, req.path, query.join("&"));
    for (k, v) in &headers {
        canonical.push_str(k);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(req.payload_sha256);
    (canonical, signed)
}

/// A header value as signed: trimmed, inner runs of spaces as one.
fn fold_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` URI-encoded the AWS way: unreserved bytes kept, every other byte `%XX`
/// (uppercase), `/` kept unless `slash` says to encode it.
pub fn encode(s: &str, slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (b == b'/' && !slash)
        {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// A path as sent and as signed: `/` then `s` encoded with its slashes kept.
pub fn encode_path(s: &str) -> String {
    format!("/{}", encode(s.trim_start_matches('/'), false))
}

/// `x-amz-date` for unix time `secs`: `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(secs: u64) -> String {
    let (y, m, d) = super::time::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key pair and scope of AWS's S3 SigV4 examples ("Signature calculations
    /// for the Authorization header: transferring payload in a single chunk").
    fn example_signer() -> Signer {
        Signer {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
        }
    }

    const HOST: &str = "examplebucket.s3.amazonaws.com";
    const DATE: &str = "20130524T000000Z";

    fn sign(
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        sha: &str,
    ) -> String {
        let mut headers = vec![
            ("Host", HOST),
            ("x-amz-date", DATE),
            ("x-amz-content-sha256", sha),
        ];
        headers.extend_from_slice(extra);
        let req = Request {
            method,
            path,
            query,
            headers: &headers,
            payload_sha256: sha,
        };
        example_signer().authorization(&req, DATE)
    }

    #[test]
    fn aws_example_get_object_range() {
        let empty = crate::hex::encode(&EMPTY_SHA256);
        let headers = [
            ("Host", HOST),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", empty.as_str()),
            ("x-amz-date", DATE),
        ];
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_sha256: &empty,
        };
        // The canonical request's hash is the example's string to sign's last line.
        let (canonical, signed) = canonical_request(&req);
        assert_eq!(signed, "host;range;x-amz-content-sha256;x-amz-date");
        assert_eq!(
            crate::hex::encode(&Sha256::digest(canonical.as_bytes())),
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(
            example_signer().authorization(&req, DATE),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_example_put_object() {
        // PUT /test$file.text "Welcome to Amazon S3.": a `$` in the key is encoded.
        let body = b"Welcome to Amazon S3.";
        let sha = crate::hex::encode(&Sha256::digest(body));
        assert_eq!(
            sha,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let path = encode_path("test$file.text");
        assert_eq!(path, "/test%24file.text");
        let auth = sign(
            "PUT",
            &path,
            &[],
            &[
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            &sha,
        );
        assert!(
            auth.ends_with("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
            "{auth}"
        );
    }

    #[test]
    fn aws_example_get_lifecycle_and_list_objects() {
        let empty = crate::hex::encode(&EMPTY_SHA256);
        // A query parameter without a value is signed as `lifecycle=`.
        let auth = sign("GET", "/", &[("lifecycle", "")], &[], &empty);
        assert!(
            auth.ends_with(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
            ),
            "{auth}"
        );
        // Parameters are sorted by name, whatever order they are given in.
        let auth = sign(
            "GET",
            "/",
            &[("prefix", "J"), ("max-keys", "2")],
            &[],
            &empty,
        );
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn encoding_follows_aws_rules() {
        assert_eq!(encode("a-b_c.d~e/f", false), "a-b_c.d~e/f");
        assert_eq!(encode("a-b_c.d~e/f", true), "a-b_c.d~e%2Ff");
        assert_eq!(encode("a b+c=d&é", true), "a%20b%2Bc%3Dd%26%C3%A9");
        assert_eq!(encode_path("/x/0/0-10-ab"), "/x/0/0-10-ab");
        assert_eq!(fold_spaces("  a   b c "), "a b c");
    }

    #[test]
    fn amz_date_is_utc_civil_time() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        // 2024-02-29 23:59:59, a leap day.
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
    }
}
