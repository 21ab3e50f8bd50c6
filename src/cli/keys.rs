//! `chute init` and `chute key`: the key file and what a peer needs to admit this
//! node.

use super::args::*;
use super::*;
use crate::recovery::Sheet;

pub(super) fn init(s: &Settings, c: InitCmd) -> Result<()> {
    let path = s.key_file(c.key_file)?;
    // The remote first: a mistyped one must not leave a new key behind.
    let spec = s.remote_spec(c.remote)?;
    let bucket = spec.starts_with("s3:");
    let local = !bucket && !spec.starts_with("http://") && !spec.starts_with("https://");
    if local {
        check_local_spec(&spec)?;
    }
    // A bucket is asked first, so wrong settings or a missing bucket leave no
    // key behind; its prefix becomes a store (its marker written) now.
    let bucket_created = if bucket {
        Some(s.open_store(&spec, true)?.1)
    } else {
        None
    };
    match crypto::create_key_file(&path) {
        Ok(()) => {
            println!("created key {}", path.display());
            println!(
                "keep a copy of it somewhere safe, off this machine: without it no backup can be read"
            );
            println!(
                "`chute key export` prints it as a recovery sheet, with what a restore elsewhere needs"
            );
        }
        Err(crypto::KeyError::Exists(_)) => {
            println!("a key already exists at {}; left as it is", path.display());
        }
        Err(e) => return Err(e.into()),
    }
    let created = match bucket_created {
        Some(c) => Some(c),
        None if local => Some(s.open_store(&spec, true)?.1),
        None => None,
    };
    match created {
        Some(true) => println!("created store {spec}"),
        Some(false) => println!("a store already exists at {spec}; left as it is"),
        None => {}
    }
    Ok(())
}

pub(super) fn key(s: &Settings, c: KeyCmd) -> Result<()> {
    match c.what.as_str() {
        "path" => {
            println!("{}", s.key_file(c.key_file)?.display());
            Ok(())
        }
        "auth" => {
            let keys = s.keys(c.key_file)?;
            let node = s.node(c.node);
            let key = crate::auth::node_key(&keys, &node);
            println!("{node}={}", crate::hex::encode(&key));
            Ok(())
        }
        "export" => export(s, c),
        "import" => import(s, c),
        other => Err(Error::Usage(format!(
            "unknown key command {other:?} (try: auth, path, export, import)"
        ))),
    }
}

/// `chute key export`: the recovery sheet on stdout.
fn export(s: &Settings, c: KeyCmd) -> Result<()> {
    if c.sheet.is_some() {
        return Err(Error::Usage(
            "key export takes no file: it prints to stdout".into(),
        ));
    }
    let path = s.key_file(c.key_file)?;
    // The key as sink uses it: the same checks and messages.
    s.keys(Some(path.clone()))?;
    let key = std::fs::read(&path).map_err(|e| Error::Io(format!("read {}", path.display()), e))?;
    let sheet = Sheet {
        key,
        node: Some(s.node(c.node)),
        domain: Some(s.domain(c.domain)),
        remote: Some(s.remote_spec(c.remote)?),
    };
    let note = format!(
        "Made {} by {}.\n\
         Whoever holds this sheet can read every backup of this node: keep it on\n\
         paper, somewhere safe, off this machine. On a new machine, type or scan it\n\
         into a file and run `chute key import FILE`; each key line's check finds\n\
         a typo on it.",
        crate::snapshot::rfc3339(crate::snapshot::unix_now() as i64),
        version()
    );
    print!("{}", sheet.to_text(&note).map_err(Error::Failed)?);
    Ok(())
}

/// `chute key import [SHEET]`: a new key file from a recovery sheet.
fn import(s: &Settings, c: KeyCmd) -> Result<()> {
    use std::io::Read;
    let path = s.key_file(c.key_file)?;
    let mut text = Vec::new();
    let read = match &c.sheet {
        Some(f) => std::fs::File::open(f).and_then(|f| f.take(1 << 20).read_to_end(&mut text)),
        None => std::io::stdin().take(1 << 20).read_to_end(&mut text),
    };
    let from = c
        .sheet
        .as_ref()
        .map_or("stdin".to_string(), |f| f.display().to_string());
    read.map_err(|e| Error::Io(format!("read the sheet from {from}"), e))?;
    let sheet = Sheet::parse(&String::from_utf8_lossy(&text))
        .map_err(|e| Error::Usage(format!("the sheet from {from}: {e}")))?;
    match crypto::write_key_file(&path, &sheet.key) {
        Ok(()) => println!(
            "created key {} from the sheet (fingerprint {})",
            path.display(),
            crate::recovery::fingerprint(&sheet.key)
        ),
        Err(crypto::KeyError::Exists(_)) => {
            if std::fs::read(&path).is_ok_and(|k| k == sheet.key) {
                println!(
                    "the key at {} is already the sheet's; left as it is",
                    path.display()
                );
            } else {
                return Err(Error::Usage(format!(
                    "a different key already exists at {}; import never replaces a key: move it away, or pass --key-file",
                    path.display()
                )));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let settings: Vec<String> = [
        ("CHUTE_NODE", &sheet.node),
        ("CHUTE_DOMAIN", &sheet.domain),
        ("CHUTE_REMOTE", &sheet.remote),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    if !settings.is_empty() {
        println!("the sheet's settings (for /etc/chute/chute.conf, the environment, or as flags):");
        for l in settings {
            println!("{l}");
        }
    }
    Ok(())
}
