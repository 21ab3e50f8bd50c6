//! The integration suite, one crate so the release profile links once: a module
//! per topic, each driving the real `chute` binary as a user would (see
//! `util`). `CHUTE_TEST_BIN` and `CHUTE_TEST_RUNNER` point it at another build,
//! such as the ARM one under qemu (cross/test-arm.sh).
mod util;

mod browse;
mod ceiling;
mod chain;
mod cli_restore;
mod compress;
mod consistency;
mod docs;
mod fs_snapshot;
mod fsx;
mod hostile_answers;
mod hostile_auth;
mod hostile_conn;
mod hostile_peer;
mod hostile_store;
mod image;
mod incremental;
mod limits;
mod maintenance;
mod manifest_v3;
mod output;
mod progress;
mod proof;
mod roundtrip;
mod s3_client;
mod s3_store;
mod security;
mod server_api;
mod server_sink;
mod setup_ops;
mod setup_traps;
mod sink_stream;
mod small_files;
mod stats;
mod tags;
mod temporaries;
mod ui;
mod walk_safety;
