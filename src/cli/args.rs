//! Every command's arguments, as argh parses them: one struct per subcommand. The
//! flag names and their help lines are the CLI's contract.

use argh::FromArgs;
use std::path::PathBuf;

/// chute: zero-knowledge backups between small boards (chute --version: this build).
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Init(InitCmd),
    Sink(SinkCmd),
    List(ListCmd),
    Status(StatusCmd),
    Restore(RestoreCmd),
    Ls(LsCmd),
    Find(FindCmd),
    Diff(DiffCmd),
    Stats(StatsCmd),
    Serve(ServeCmd),
    Key(KeyCmd),
    Verify(VerifyCmd),
    Forget(ForgetCmd),
    Prune(PruneCmd),
    Scrub(ScrubCmd),
    Generate(GenerateCmd),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Sink(_) => "sink",
            Command::List(_) => "list",
            Command::Status(_) => "status",
            Command::Restore(_) => "restore",
            Command::Ls(_) => "ls",
            Command::Find(_) => "find",
            Command::Diff(_) => "diff",
            Command::Stats(_) => "stats",
            Command::Serve(_) => "serve",
            Command::Key(_) => "key",
            Command::Verify(_) => "verify",
            Command::Forget(_) => "forget",
            Command::Prune(_) => "prune",
            Command::Scrub(_) => "scrub",
            Command::Generate(_) => "generate",
        }
    }
}

/// Create a new random key file (never replaces one) and, when the remote is a
/// directory, the store there: the only command that creates a store.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "init")]
pub struct InitCmd {
    /// key file (CHUTE_KEY_FILE; default $XDG_CONFIG_HOME/chute/key)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// the store directory to create (CHUTE_REMOTE; default
    /// ~/.local/share/chute/store); an http:// peer creates its own; in an
    /// s3:http:// bucket (which must exist) the prefix becomes a store
    #[argh(option)]
    pub remote: Option<String>,
}

/// Back up PATHs (default: CHUTE_PATHS and CHUTE_PATHS_FILE) as a new snapshot.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sink")]
pub struct SinkCmd {
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
    /// print a line per file read (new or changed), on stdout
    #[argh(switch, short = 'v')]
    pub verbose: bool,
    /// files and directories to back up
    #[argh(positional)]
    pub paths: Vec<PathBuf>,
    /// skip names (or, with a '/', whole paths) matching this glob; repeatable (CHUTE_EXCLUDE)
    #[argh(option, short = 'e')]
    pub exclude: Vec<String>,
    /// read --exclude globs from FILE, one a line ('#' comments); repeatable
    /// (CHUTE_EXCLUDE_FILE)
    #[argh(option)]
    pub exclude_file: Vec<PathBuf>,
    /// read PATHs from FILE, one a line, spaces included ('#' comments); with
    /// PATHs, backs up both; repeatable (CHUTE_PATHS_FILE)
    #[argh(option)]
    pub files_from: Vec<PathBuf>,
    /// skip directories holding a CACHEDIR.TAG (the default; CHUTE_EXCLUDE_CACHES=0
    /// turns it off)
    #[argh(switch)]
    pub exclude_caches: bool,
    /// back up directories holding a CACHEDIR.TAG too
    #[argh(switch)]
    pub no_exclude_caches: bool,
    /// stay on each PATH's file system: do not enter mounts below it
    /// (CHUTE_ONE_FILE_SYSTEM=1)
    #[argh(switch, short = 'x')]
    pub one_file_system: bool,
    /// where snapshots go: a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain part of the store path (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node name (CHUTE_NODE; default the host name)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// send at most RATE bytes a second to the remote (e.g. 2M, 500K; also to a
    /// store directory); all threads share it (CHUTE_LIMIT_UPLOAD)
    #[argh(option)]
    pub limit_upload: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// sealing and upload threads (default: the number of cores)
    #[argh(option, short = 'j')]
    pub threads: Option<usize>,
    /// compress chunks before sealing: auto (the default: LZ4, kept when it saves
    /// an eighth) or off (CHUTE_COMPRESSION)
    #[argh(option)]
    pub compression: Option<String>,
    /// read each root from a read-only snapshot of its file system, removed
    /// after the walk: auto (btrfs, LVM thin or ZFS where a root is on one, else
    /// read live with a note), btrfs, lvm, zfs, or off (the default)
    /// (CHUTE_FS_SNAPSHOT)
    #[argh(option)]
    pub fs_snapshot: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
    /// write a progress line (files and bytes done of the total, rate, time
    /// left) to stderr every 2 s, also when it is not a terminal (a log file, the
    /// management page's sink; on a terminal one line is redrawn anyway)
    #[argh(switch)]
    pub progress: bool,
    /// a tag for the snapshot (at most 64 bytes, no comma), sealed with it: the
    /// store never sees it; repeatable (CHUTE_TAG)
    #[argh(option)]
    pub tag: Vec<String>,
}

/// List snapshots, oldest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListCmd {
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// only snapshots with this tag (a,b: with both); repeatable: with any
    #[argh(option)]
    pub tag: Vec<String>,
    /// only snapshots whose source paths include P (exactly, as given to sink); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
}

/// Show how this node's last sink and last verify on this machine ended (from
/// its records beside the cache; the remote is not read).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusCmd {
    /// print JSON
    #[argh(switch)]
    pub json: bool,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
}

/// Restore a snapshot (an id, a timestamp, or "latest"), or some PATHs of it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "restore")]
pub struct RestoreCmd {
    /// snapshot id, timestamp, or latest
    #[argh(positional)]
    pub snapshot: String,
    /// only these files or directories (as they were backed up), or globs of
    /// them ('*', '?', '[...]'; with a '/', whole paths from the root; without,
    /// names)
    #[argh(positional)]
    pub paths: Vec<PathBuf>,
    /// restore under this directory instead of to the original paths
    #[argh(option, short = 't')]
    pub to: Option<PathBuf>,
    /// replace existing files
    #[argh(switch, short = 'f')]
    pub force: bool,
    /// latest is the newest snapshot whose source paths include P (exactly, as given to sink); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// download and write threads (default: the number of cores)
    #[argh(option, short = 'j')]
    pub threads: Option<usize>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
    /// print a line per file restored, on stdout
    #[argh(switch, short = 'v')]
    pub verbose: bool,
}

/// List the files of a snapshot (an id, a timestamp, or "latest"), or of some
/// PATHs in it, in backup order.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ls")]
pub struct LsCmd {
    /// snapshot id, timestamp, or latest
    #[argh(positional)]
    pub snapshot: String,
    /// only these files or directories and what they hold (as they were backed up)
    #[argh(positional)]
    pub paths: Vec<PathBuf>,
    /// mode, owner, size and mtime (UTC) before each path
    #[argh(switch, short = 'l')]
    pub long: bool,
    /// one JSON object per entry, one a line
    #[argh(switch)]
    pub json: bool,
    /// latest is the newest snapshot whose source paths include P (exactly, as given to sink); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
}

/// How much the snapshots hold and store: files, bytes, the distinct chunks they
/// use (unique bytes, counted once) and their sealed size on the store, the
/// dedup ratio; a line per set of source paths, then the total.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
pub struct StatsCmd {
    /// snapshot ids, timestamps, or latest (default: every snapshot of this node)
    #[argh(positional)]
    pub snapshots: Vec<String>,
    /// one JSON object: {total, path_sets}
    #[argh(switch)]
    pub json: bool,
    /// only snapshots whose source paths include P (exactly, as given to sink; latest: the newest of them); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
}

/// Which snapshots, oldest first, hold a path matching a PATTERN: a glob ('*',
/// '?', '[...]' within one component) matching names, or with a '/' whole paths.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "find")]
pub struct FindCmd {
    /// globs; a path matching any of them is printed
    #[argh(positional)]
    pub patterns: Vec<String>,
    /// look only in this snapshot (an id, a timestamp, or latest); repeatable
    #[argh(option)]
    pub snapshot: Vec<String>,
    /// one JSON object per match, one a line
    #[argh(switch)]
    pub json: bool,
    /// only in snapshots whose source paths include P (exactly, as given to sink; --snapshot latest: the newest of them); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
}

/// What changed from snapshot A to snapshot B (each an id, a timestamp, or
/// latest): + added, - removed, M content, T type, U mode, owner, mtime or xattrs only.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "diff")]
pub struct DiffCmd {
    /// the older snapshot
    #[argh(positional)]
    pub a: String,
    /// the newer snapshot
    #[argh(positional)]
    pub b: String,
    /// one JSON object per change, one a line, then a summary object
    #[argh(switch)]
    pub json: bool,
    /// latest is the newest snapshot whose source paths include P (exactly, as given to sink); repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
}

/// Serve a store to peers over HTTP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeCmd {
    /// address to listen on (CHUTE_LISTEN; default 0.0.0.0:2002)
    #[argh(option, short = 'l')]
    pub listen: Option<String>,
    /// store directory or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_STORE; default /var/lib/chute as root)
    #[argh(option, short = 's')]
    pub store: Option<PathBuf>,
    /// worker threads (default: the number of cores)
    #[argh(option, short = 'j')]
    pub threads: Option<usize>,
    /// admit a node: NODE=KEY as `chute key auth` prints it on that node; repeatable
    #[argh(option)]
    pub allow: Vec<String>,
    /// file of NODE=KEY [quota=BYTES] lines (CHUTE_ALLOW_FILE)
    #[argh(option)]
    pub allow_file: Option<PathBuf>,
    /// a name nodes reach this server by, as in their --remote http://NAME[:PORT]
    /// (NAME alone means on the port it listens on); requests signed for any other
    /// name are refused. Its own IP address and, on loopback, localhost always
    /// count; repeatable (CHUTE_NAME, comma-separated)
    #[argh(option)]
    pub name: Vec<String>,
    /// accept unsigned requests from anyone (tests, trusted LANs only)
    #[argh(switch)]
    pub open: bool,
    /// refuse every delete, so a compromised node cannot destroy its history
    #[argh(switch)]
    pub append_only: bool,
    /// with --append-only: allow deletes that prove this key (any file of random
    /// bytes, kept off the nodes' cron jobs) (CHUTE_ADMIN_KEY_FILE)
    #[argh(option)]
    pub admin_key_file: Option<PathBuf>,
    /// cap a node's stored bytes: NODE=BYTES (e.g. pi=20G); repeatable
    #[argh(option)]
    pub quota: Vec<String>,
    /// largest window one PUT may carry (default 64M; 4M in front of a bucket,
    /// whose windows are held in memory until sent on)
    #[argh(option)]
    pub max_window: Option<String>,
    /// seconds a connection may stay silent before it is dropped (default 30)
    #[argh(option)]
    pub timeout: Option<u64>,
    /// connections open at once; when full, the oldest idle one is closed to admit
    /// a new one (CHUTE_MAX_CONNECTIONS; default 256)
    #[argh(option)]
    pub max_connections: Option<String>,
    /// connections open at once from one IP address (CHUTE_MAX_PER_ADDRESS;
    /// default 64)
    #[argh(option)]
    pub max_per_address: Option<String>,
    /// re-hash every stored window in the background, a pass every DURATION (e.g.
    /// 30d; s, m, h, d) (CHUTE_SCRUB_EVERY; default 0: off)
    #[argh(option)]
    pub scrub_every: Option<String>,
    /// most bytes a second the background scrub reads, 0 for no limit (e.g. 20M)
    /// (CHUTE_SCRUB_RATE; default 10M)
    #[argh(option)]
    pub scrub_rate: Option<String>,
    /// requests a second each node may make, sustained; past it 429 with
    /// Retry-After; 0 for no limit (CHUTE_RATE_LIMIT; default 500)
    #[argh(option)]
    pub rate_limit: Option<String>,
    /// requests each node may make at once before --rate-limit applies
    /// (CHUTE_RATE_BURST; default 1000)
    #[argh(option)]
    pub rate_burst: Option<String>,
    /// let this address or network (ADDR or ADDR/BITS, IPv4 or IPv6) see the
    /// management page, /chute/status and /metrics besides loopback; repeatable
    #[argh(option)]
    pub ui_allow: Vec<String>,
    /// a file holding a token (at least 16 bytes) that opens the management page
    /// to anyone who presents it (Authorization: Bearer, or the /login form)
    /// (CHUTE_UI_TOKEN_FILE)
    #[argh(option)]
    pub ui_token_file: Option<PathBuf>,
    /// highlight a node on the page whose last commit is older than DURATION
    /// (s, m, h, d; default 36h)
    #[argh(option)]
    pub ui_stale: Option<String>,
    /// log one line per request (by default: commits, forgets, deletes and
    /// refusals only)
    #[argh(switch)]
    pub log_requests: bool,
}

/// Key utilities.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "key")]
pub struct KeyCmd {
    /// auth: the NODE=KEY line a peer needs to admit this node (it cannot
    /// decrypt anything); path: where the key file is; export: a recovery sheet
    /// to print (the key, node, domain and remote a restore elsewhere needs);
    /// import [SHEET]: a new key file from a sheet (a file, or stdin)
    #[argh(positional)]
    pub what: String,
    /// for import: the sheet's file (default: stdin)
    #[argh(positional)]
    pub sheet: Option<PathBuf>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// node (CHUTE_NODE; default the host name)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// domain (CHUTE_DOMAIN), for export
    #[argh(option)]
    pub domain: Option<String>,
    /// the remote (CHUTE_REMOTE), for export
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
}

/// Check that snapshots are intact; by default without downloading file data.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "verify")]
pub struct VerifyCmd {
    /// snapshot id, timestamp, or latest (the default)
    #[argh(positional)]
    pub snapshot: Option<String>,
    /// verify every snapshot
    #[argh(switch)]
    pub all: bool,
    /// download, authenticate and decrypt every chunk
    #[argh(switch)]
    pub read_data: bool,
    /// the same for a random N% of the chunks, different on each run (e.g. 5%)
    #[argh(option)]
    pub read_data_subset: Option<String>,
    /// latest is the newest snapshot whose source paths include P (exactly, as given to sink); with --all, only those; repeatable
    #[argh(option)]
    pub path: Vec<PathBuf>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<std::path::PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// parallel requests (default: the number of cores)
    #[argh(option, short = 'j')]
    pub threads: Option<usize>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
/// Forget snapshots by a keep policy (restic's --keep-* rules), or by id.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "forget")]
pub struct ForgetCmd {
    /// snapshot ids or timestamps to forget (instead of a policy)
    #[argh(positional)]
    pub snapshots: Vec<String>,
    /// keep the N newest snapshots ("unlimited" for all)
    #[argh(option)]
    pub keep_last: Option<String>,
    /// keep the newest snapshot of each of the N most recent hours with one
    #[argh(option)]
    pub keep_hourly: Option<String>,
    /// keep the newest snapshot of each of the N most recent days with one
    #[argh(option)]
    pub keep_daily: Option<String>,
    /// keep the newest snapshot of each of the N most recent ISO weeks with one
    #[argh(option)]
    pub keep_weekly: Option<String>,
    /// keep the newest snapshot of each of the N most recent months with one
    #[argh(option)]
    pub keep_monthly: Option<String>,
    /// keep the newest snapshot of each of the N most recent years with one
    #[argh(option)]
    pub keep_yearly: Option<String>,
    /// never forget snapshots with this tag (a,b: with both); repeatable: with any
    #[argh(option)]
    pub keep_tag: Vec<String>,
    /// apply the policy only to snapshots with this tag (a,b: with both);
    /// repeatable: with any; the others are left alone
    #[argh(option)]
    pub tag: Vec<String>,
    /// print what would be kept and forgotten, change nothing
    #[argh(switch)]
    pub dry_run: bool,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<std::path::PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// proves the peer's admin key, which an --append-only peer asks of every
    /// delete; keep it off the nightly cron job
    #[argh(option)]
    pub admin_key_file: Option<std::path::PathBuf>,
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
/// Delete data no remaining snapshot references (after a grace period).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "prune")]
pub struct PruneCmd {
    /// how long a blob must stay unreferenced before it is deleted: 0, 30m, 24h (the
    /// default), 7d; 0 is only safe when no sink runs meanwhile
    #[argh(option)]
    pub grace: Option<String>,
    /// print what would be marked and deleted, change nothing
    #[argh(switch)]
    pub dry_run: bool,
    /// repack a blob that snapshots still use in part once this share of it is
    /// unused (default 25%; 100% never repacks)
    #[argh(option)]
    pub repack_threshold: Option<String>,
    /// a store directory, http://HOST:PORT or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_REMOTE)
    #[argh(option, short = 'r')]
    pub remote: Option<String>,
    /// key file (CHUTE_KEY_FILE)
    #[argh(option, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// domain (CHUTE_DOMAIN)
    #[argh(option)]
    pub domain: Option<String>,
    /// node (CHUTE_NODE)
    #[argh(option, short = 'n')]
    pub node: Option<String>,
    /// send at most RATE bytes a second to the remote (e.g. 2M, 500K; also to a
    /// store directory); all threads share it (CHUTE_LIMIT_UPLOAD)
    #[argh(option)]
    pub limit_upload: Option<String>,
    /// read at most RATE bytes a second from the remote (e.g. 8M; also from a
    /// store directory); all threads share it (CHUTE_LIMIT_DOWNLOAD)
    #[argh(option)]
    pub limit_download: Option<String>,
    /// proves the peer's admin key, which an --append-only peer asks of every
    /// delete; keep it off the nightly cron job
    #[argh(option)]
    pub admin_key_file: Option<std::path::PathBuf>,
    /// take the store's view of the snapshot chain although it is older than this
    /// node's record or has gaps (a peer restored from an old disk); says so
    #[argh(switch)]
    pub accept_rollback: bool,
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}
/// Re-hash every stored window against the SHA-256 it arrived with (no key needed).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "scrub")]
pub struct ScrubCmd {
    /// store directory or s3:http://HOST[:PORT]/BUCKET[/PREFIX] (CHUTE_STORE;
    /// default /var/lib/chute as root, else $XDG_DATA_HOME/chute/store)
    #[argh(option, short = 's')]
    pub store: Option<PathBuf>,
    /// print the result as one JSON object, nothing else on stdout
    #[argh(switch)]
    pub json: bool,
    /// print nothing but errors
    #[argh(switch, short = 'q')]
    pub quiet: bool,
}

/// Write the man pages and the shell completions, made from these same --help
/// texts (make docs writes the copies in setup/ that make install installs).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "generate")]
pub struct GenerateCmd {
    /// write chute.1 and a chute-COMMAND.1 for each command into DIR
    #[argh(option)]
    pub man: Option<PathBuf>,
    /// write the bash completion script to FILE
    #[argh(option)]
    pub bash: Option<PathBuf>,
    /// write the zsh completion function (_chute) to FILE
    #[argh(option)]
    pub zsh: Option<PathBuf>,
    /// write the fish completions to FILE
    #[argh(option)]
    pub fish: Option<PathBuf>,
}
