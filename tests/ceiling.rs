//! The single-core ceiling of this build: how fast one thread can seal, identify
//! and cut chunks, with no I/O at all. `tests/bench.sh` compares sink against it
//! (target: sink ≥ 50% of seal+HMAC), so the figures must come from the same
//! release build and the same code paths sink uses: `Keys::seal_into(Kind::Chunk,
//! ..)` over 1 MiB chunks, `Keys::chunk_id` (HMAC-SHA256) over the same, and
//! `Chunker::cut`; and restore's per-chunk step, opening with and without the check
//! of the chunk's id (`Keys::open_chunk`). Ignored by default because it measures, not checks:
//!
//! `cargo test --release --test tests -- --ignored --nocapture ceiling::`
//!
//! Each figure is printed as one `CEILING <name> <MB/s>` line (MB = 10^6 bytes) so
//! the bench script can pick it out. `CHUTE_CEILING_MIB` sets the bytes per figure
//! (default 1024).
use crate::util::noise;
use chute::chunker::{self, Chunker};
use chute::compress::Mode;
use chute::crypto::{ChunkBuf, Keys, Kind, OVERHEAD};
use std::hint::black_box;
use std::time::Instant;

/// Same size as the chunker's average chunk, the size sink seals most often.
const BUF: usize = 1 << 20;

fn total_bytes() -> usize {
    let mib: usize = std::env::var("CHUTE_CEILING_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    mib << 20
}

fn report(name: &str, bytes: usize, secs: f64) -> f64 {
    let mbps = bytes as f64 / secs / 1e6;
    println!("CEILING {name} {mbps:.1}");
    eprintln!("{name}: {bytes} bytes in {secs:.3} s = {mbps:.1} MB/s (one thread)");
    mbps
}

#[test]
#[ignore = "a measurement, run by tests/bench.sh"]
fn single_core_ceiling() {
    let total = total_bytes();
    let rounds = total / BUF;
    let keys = Keys::from_key_bytes(&[7u8; 32]);
    let plain = noise(BUF, 0x63_6875_7465);
    let context = keys.chunk_id(&plain);

    // Seal: the per-chunk AEAD, output buffer reused as sink's workers reuse theirs.
    let mut sealed = Vec::with_capacity(BUF + OVERHEAD);
    let start = Instant::now();
    for _ in 0..rounds {
        sealed.clear();
        keys.seal_into(Kind::Chunk, &context, black_box(&plain), &mut sealed);
        black_box(&sealed);
    }
    let seal = report("seal", rounds * BUF, start.elapsed().as_secs_f64());
    assert_eq!(sealed.len(), BUF + OVERHEAD);

    // Chunk id: keyed HMAC-SHA256 of the plaintext.
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(keys.chunk_id(black_box(&plain)));
    }
    let hmac = report("hmac", rounds * BUF, start.elapsed().as_secs_f64());

    // Chunker: cut a 64 MiB buffer end to end, again and again, until `total` is cut.
    // The bytes a cut skips (the first MIN of each chunk) count, as they do in sink.
    let chunker = Chunker::new(keys.gear_seed());
    let data = noise(64 << 20, 0x6765_6172);
    let mut cut = 0usize;
    let mut chunks = 0usize;
    let start = Instant::now();
    while cut < total {
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = chunker.cut(black_box(rest));
            rest = &rest[n..];
            cut += n;
            chunks += 1;
        }
    }
    let cdc = report("chunker", cut, start.elapsed().as_secs_f64());
    eprintln!(
        "chunker: {chunks} chunks, mean {:.0} KiB (min {} KiB, avg {} KiB, max {} KiB)",
        cut as f64 / chunks as f64 / 1024.0,
        chunker::MIN >> 10,
        chunker::AVG >> 10,
        chunker::MAX >> 10
    );

    // Sink's own step: copy the chunk once, id and seal from that copy.
    // The data is random: `auto` would only add the failed LZ4 attempt.
    let mut buf = Vec::with_capacity(BUF + OVERHEAD);
    let mut scratch = Vec::new();
    let start = Instant::now();
    for _ in 0..rounds {
        let mut c = ChunkBuf::copy_of(black_box(&plain), std::mem::take(&mut buf));
        black_box(keys.seal_chunk(&mut c, Mode::Off, &mut scratch));
        buf = c.into_vec();
    }
    report(
        "copy+hmac+seal",
        rounds * BUF,
        start.elapsed().as_secs_f64(),
    );

    // Restore's step before and after it checked every chunk's id: open alone, and
    // open + the HMAC of the opened bytes (`Keys::open_chunk`).
    let mut work = sealed.clone();
    let start = Instant::now();
    for _ in 0..rounds {
        work.copy_from_slice(&sealed);
        black_box(
            keys.open_in_place(Kind::Chunk, &context, black_box(&mut work))
                .is_ok(),
        );
    }
    report("open", rounds * BUF, start.elapsed().as_secs_f64());
    let start = Instant::now();
    for _ in 0..rounds {
        work.copy_from_slice(&sealed);
        let opened = keys.open_chunk(&context, 0, black_box(&mut work), &mut scratch);
        black_box(opened.is_ok());
    }
    report("open+id", rounds * BUF, start.elapsed().as_secs_f64());

    // One thread doing every step of a chunk in turn: the rates add as times.
    let ceiling = 1.0 / (1.0 / seal + 1.0 / hmac);
    println!("CEILING seal+hmac {ceiling:.1}");
    let all = 1.0 / (1.0 / seal + 1.0 / hmac + 1.0 / cdc);
    println!("CEILING seal+hmac+chunker {all:.1}");
    eprintln!("ceiling (seal+hmac): {ceiling:.1} MB/s; with chunker: {all:.1} MB/s");
}
