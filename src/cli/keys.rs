//! `chute init` and `chute key`: the key file and what a peer needs to admit this
//! node.

use super::args::*;
use super::*;

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
        other => Err(Error::Usage(format!(
            "unknown key command {other:?} (try: auth, path)"
        ))),
    }
}
