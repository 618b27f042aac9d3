//! Seeing inside the allocator, through `#[global_allocator]`: the statistics printed at exit with
//! `SMALLARENA_STATS` (table and JSON, parsed here), `collect()` lowering the resident size after a
//! burst is freed, and `usable_size`.
//!
//! Cases that need a process of their own (an exit to print at, an environment variable read at
//! start-up, resident sizes no other test disturbs) run this test binary again as a child with
//! `OBSERVE_CHILD=<case>` set and libtest told to run only that case.

use std::alloc::{GlobalAlloc, Layout};
use std::process::{Command, Output};

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

/// The child case this process runs, if it is a child.
fn child_case() -> Option<String> {
    std::env::var("OBSERVE_CHILD").ok()
}

/// Runs the test `case` of this binary in a child process with `env` set.
fn run_child(case: &str, env: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let o = Command::new(exe)
        .args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env_remove("SMALLARENA_STATS")
        .env_remove("SMALLARENA_MODE")
        .env("OBSERVE_CHILD", case)
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    assert!(
        o.status.success(),
        "child {case} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Blocks this many: 1000 blocks of 100 bytes (class 6, 112-byte blocks), kept alive to the end.
const KEPT: usize = 1000;

/// Child: leaves `KEPT` blocks of 100 bytes alive at exit.
#[test]
fn child_keeps_blocks() {
    if child_case().as_deref() != Some("child_keeps_blocks") {
        return;
    }
    let kept: Vec<Box<[u8; 100]>> = (0..KEPT).map(|i| Box::new([i as u8; 100])).collect();
    std::mem::forget(kept);
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn stats_json_at_exit_is_one_parsable_object() {
    if child_case().is_some() {
        return;
    }
    let o = run_child("child_keeps_blocks", &[("SMALLARENA_STATS", "json")]);
    let err = stderr_of(&o);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object on stderr:\n{err}"));
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}):\n{line}"));
    assert_eq!(v["mode"], "Arena");
    let classes = v["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), 56);
    assert_eq!(classes[32]["block_size"], 640);
    assert_eq!(classes[55]["block_size"], 32768);
    let c6 = &classes[6];
    assert_eq!(c6["block_size"], 112);
    let in_use = c6["blocks_in_use"].as_u64().unwrap();
    assert!(in_use >= KEPT as u64, "{c6}");
    assert_eq!(c6["bytes_in_use"].as_u64().unwrap(), in_use * 112);
    for field in [
        "arenas_mapped",
        "arenas_peak",
        "medium_arenas_mapped",
        "medium_arenas_peak",
        "bytes_mapped",
        "bytes_mapped_peak",
        "bytes_in_blocks",
        "bytes_requested",
        "bytes_requested_peak",
        "resident_bytes",
        "resident_peak_bytes",
        "free_pools",
        "cached_pools",
        "heaps",
        "heaps_abandoned",
        "heap_handoffs",
        "pools_purged",
        "arenas_unmapped",
        "pools_reclaimed",
        "blocks_in_use",
        "pools_in_use",
        "pid",
    ] {
        assert!(v[field].is_u64(), "{field} missing in {line}");
    }
    let n = |f: &str| v[f].as_u64().unwrap();
    assert!(n("arenas_mapped") >= 1);
    assert_eq!(
        n("bytes_mapped"),
        (n("arenas_mapped") << 20) + (n("medium_arenas_mapped") << 22)
    );
    assert!(n("bytes_mapped_peak") >= n("bytes_mapped"));
    assert!(n("bytes_requested") >= (KEPT * 100) as u64);
    assert!(n("bytes_requested_peak") >= n("bytes_requested"));
    assert!(n("bytes_in_blocks") >= (KEPT * 112) as u64);
    // The resident size comes from the OS: at least the kept blocks, below a gigabyte.
    assert!(n("resident_bytes") >= (KEPT * 112) as u64);
    assert!(n("resident_bytes") < 1 << 30);
    assert!(n("resident_peak_bytes") >= n("resident_bytes"));
    // Exactly one object: the table is not printed as well.
    assert_eq!(err.matches("\"classes\"").count(), 1, "{err}");
    assert!(!err.contains("class    size"), "{err}");
}

#[test]
fn stats_table_at_exit() {
    if child_case().is_some() {
        return;
    }
    let o = run_child("child_keeps_blocks", &[("SMALLARENA_STATS", "1")]);
    let err = stderr_of(&o);
    assert!(
        err.contains("smallarena: statistics at exit of process "),
        "{err}"
    );
    assert!(err.contains("smallarena: Arena mode"), "{err}");
    assert!(
        err.contains("class    size   pools   blocks in use   free blocks"),
        "{err}"
    );
    let row = err
        .lines()
        .find(|l| l.split_whitespace().next() == Some("6"))
        .unwrap_or_else(|| panic!("no row for class 6:\n{err}"));
    let cols: Vec<usize> = row.split_whitespace().map(|c| c.parse().unwrap()).collect();
    assert_eq!(cols[1], 112, "{row}");
    assert!(cols[3] >= KEPT, "{row}");
    for label in [
        "# arenas mapped now / peak",
        "# bytes mapped now / peak",
        "# bytes requested now / peak",
        "# resident bytes now / peak",
        "# heap handoffs",
        "# pools purged",
        "# arenas unmapped",
        "# pools reclaimed",
    ] {
        assert!(err.contains(label), "no {label:?} in:\n{err}");
    }
    assert!(!err.contains('{'), "{err}");
}

#[test]
fn no_stats_unless_asked_and_a_wrong_value_is_echoed() {
    if child_case().is_some() {
        return;
    }
    let o = run_child("child_keeps_blocks", &[]);
    assert!(!stderr_of(&o).contains("smallarena"), "{}", stderr_of(&o));
    let o = run_child("child_keeps_blocks", &[("SMALLARENA_STATS", "0")]);
    assert!(!stderr_of(&o).contains("smallarena"), "{}", stderr_of(&o));
    let o = run_child("child_keeps_blocks", &[("SMALLARENA_STATS", "verbose")]);
    let err = stderr_of(&o);
    assert_eq!(
        err.matches("smallarena: unknown SMALLARENA_STATS value \"verbose\"; accepted: 0, 1, json; using 0\n")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains("class    size"), "{err}");
}

/// Blocks of 400 bytes (class 24, 40 to a pool, 2520 to an arena).
const BURST_SIZE: usize = 400;
/// 40 MiB of them, about 40 arenas.
const BURST: usize = 100_000;
/// One block in this many stays alive: at least one in every arena, so none is wholly empty and
/// only `collect()` can give the free pools' memory back.
const KEEP_EVERY: usize = 2000;

/// Child: the burst, its release, and the resident sizes around `collect()`.
#[test]
fn child_collect() {
    if child_case().as_deref() != Some("child_collect") {
        return;
    }
    let layout = Layout::from_size_align(BURST_SIZE, 8).unwrap();
    let before = smallarena::stats();
    let mut blocks = Vec::with_capacity(BURST);
    for i in 0..BURST {
        // SAFETY: a valid non-zero layout; every block is freed once below, with this layout.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: the block has BURST_SIZE writable bytes; dirtied so its pages are resident.
        unsafe { p.write_bytes(0xA5 ^ i as u8, BURST_SIZE) };
        blocks.push(p);
    }
    let full = smallarena::stats();
    let mut kept = Vec::new();
    for (i, p) in blocks.drain(..).enumerate() {
        if i % KEEP_EVERY == 0 {
            kept.push(p);
        } else {
            // SAFETY: live block of `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
    let freed = smallarena::stats();
    smallarena::collect();
    let collected = smallarena::stats();
    println!(
        "arenas {} -> {} -> {} -> {}; resident {} -> {} -> {} -> {} KiB",
        before.arenas_mapped,
        full.arenas_mapped,
        freed.arenas_mapped,
        collected.arenas_mapped,
        before.resident_bytes >> 10,
        full.resident_bytes >> 10,
        freed.resident_bytes >> 10,
        collected.resident_bytes >> 10,
    );
    let burst_bytes = BURST * BURST_SIZE;
    assert!(full.resident_bytes >= before.resident_bytes + burst_bytes * 9 / 10);
    // Freeing alone leaves the pages resident (no arena is wholly empty) ...
    assert!(freed.resident_bytes + burst_bytes / 4 > full.resident_bytes);
    assert!(freed.arenas_mapped + 2 >= full.arenas_mapped);
    // ... collect() gives most of them back: 12 KiB of every free 16 KiB pool, 4 KiB pages.
    let dropped = freed
        .resident_bytes
        .saturating_sub(collected.resident_bytes);
    assert!(
        dropped >= burst_bytes / 2,
        "collect() gave back only {} KiB of {} KiB",
        dropped >> 10,
        burst_bytes >> 10
    );
    assert!(collected.bytes_requested_peak >= burst_bytes);

    // The dropped pools come back as fresh memory: zeroed blocks must read as zeros.
    let again: Vec<*mut u8> = (0..BURST / 2)
        // SAFETY: a valid non-zero layout.
        .map(|_| unsafe { GLOBAL.alloc_zeroed(layout) })
        .collect();
    for &p in &again {
        assert!(!p.is_null());
        // SAFETY: a live block of BURST_SIZE bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, BURST_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0), "a zeroed block is dirty");
    }
    // Everything freed: collect() unmaps every arena of the burst, the one normally kept too.
    for p in again.into_iter().chain(kept) {
        // SAFETY: live blocks of `layout`, each freed once.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    smallarena::collect();
    let end = smallarena::stats();
    println!(
        "after freeing everything and collect(): {} arenas",
        end.arenas_mapped
    );
    assert!(
        end.arenas_mapped <= before.arenas_mapped,
        "{} arenas mapped, {} before the burst",
        end.arenas_mapped,
        before.arenas_mapped
    );
}

#[test]
fn collect_lowers_the_resident_size() {
    if child_case().is_some() {
        return;
    }
    // Purging off: only collect() may give the free pools back.
    let o = run_child("child_collect", &[("SMALLARENA_PURGE_DELAY_MS", "never")]);
    print!("{}", String::from_utf8_lossy(&o.stdout));
}

/// Child: `usable_size` in `System` mode is libc's.
#[test]
fn child_usable_size_system() {
    if child_case().as_deref() != Some("child_usable_size_system") {
        return;
    }
    assert_eq!(smallarena::mode(), smallarena::Mode::System);
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layout; freed once with it.
    unsafe {
        let p = GLOBAL.alloc(layout);
        let us = smallarena::usable_size(p, layout);
        assert_eq!(us, libc::malloc_usable_size(p.cast()));
        assert!(us >= 100);
        GLOBAL.dealloc(p, layout);
    }
}

#[test]
fn usable_size_per_mode() {
    if child_case().is_some() {
        return;
    }
    assert_eq!(smallarena::mode(), smallarena::Mode::Arena);
    for (size, align, want) in [
        (1, 1, Some(16)),
        (16, 8, Some(16)),
        (17, 8, Some(32)),
        (100, 8, Some(112)),
        (512, 16, Some(512)),
        (513, 8, Some(640)),
        (1025, 16, Some(1280)),
        (32768, 8, Some(32768)),
        (32769, 8, None),
        (100, 64, None),
        (1000, 32, None),
        (100_000, 8, None),
    ] {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: valid non-zero layouts; each block is freed once with its layout.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null());
            let us = smallarena::usable_size(p, layout);
            match want {
                Some(w) => assert_eq!(us, w, "{layout:?}"),
                // From libc: at least the size, as libc says.
                None => {
                    assert!(us >= size, "{layout:?}: {us}");
                    assert_eq!(us, libc::malloc_usable_size(p.cast()), "{layout:?}");
                }
            }
            // Every usable byte may be written.
            p.write_bytes(0x5A, us);
            GLOBAL.dealloc(p, layout);
        }
    }
    run_child("child_usable_size_system", &[("SMALLARENA_MODE", "system")]);
}

/// With the `serde` feature, `Stats` serializes with its field names, as the JSON printer writes
/// them.
#[cfg(feature = "serde")]
#[test]
fn stats_serialize_like_the_printed_json() {
    let s = smallarena::stats();
    let derived = serde_json::to_value(&s).unwrap();
    let printed: serde_json::Value = serde_json::from_str(&s.json().to_string()).unwrap();
    let derived = derived.as_object().unwrap();
    // One entry per size class: 32 small (16-512 B) and 24 medium (640 B-32 KiB).
    assert_eq!(derived["classes"].as_array().unwrap().len(), 32 + 24);
    assert_eq!(s.classes.len(), 32 + 24);
    for (field, value) in derived {
        assert!(printed.get(field).is_some(), "{field} not printed");
        if field == "classes" {
            assert_eq!(value[6]["block_size"], printed["classes"][6]["block_size"]);
        }
    }
}

/// Child: closes its stderr in an `atexit` handler of its own, as GNU coreutils do.
#[test]
fn child_closes_stderr_at_exit() {
    if child_case().as_deref() != Some("child_closes_stderr_at_exit") {
        return;
    }
    extern "C" fn close_stderr() {
        // SAFETY: closing a descriptor has no memory-safety preconditions.
        unsafe { libc::close(2) };
    }
    // SAFETY: a plain function valid for the life of the process.
    assert_eq!(unsafe { libc::atexit(close_stderr) }, 0);
    let kept: Vec<Box<[u8; 100]>> = (0..KEPT).map(|i| Box::new([i as u8; 100])).collect();
    std::mem::forget(kept);
}

/// A program that closes stderr in its own `atexit` handler still gets its statistics on the
/// stderr it started with.
#[test]
fn stats_at_exit_survive_a_closed_stderr() {
    if child_case().is_some() {
        return;
    }
    let o = run_child(
        "child_closes_stderr_at_exit",
        &[("SMALLARENA_STATS", "json")],
    );
    let err = stderr_of(&o);
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object on stderr:\n{err}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(v["classes"][6]["blocks_in_use"].as_u64().unwrap() >= KEPT as u64);
}
