//! `fork()` while other threads allocate: the child allocates, frees inherited blocks and exits
//! cleanly; the parent goes on.

use std::alloc::{alloc, dealloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[global_allocator]
static GLOBAL: smallarena::SmallArena = smallarena::SmallArena::new();

#[test]
fn fork_while_threads_allocate() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut v: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    v.push(vec![t as u8; 1 + (i * 7) % 500]);
                    if v.len() > 2000 {
                        v.drain(..1000);
                    }
                    i += 1;
                }
                v.len()
            })
        })
        .collect();
    // Blocks the child will inherit and free.
    let inherited: Vec<Box<[u8]>> = (0..5000)
        .map(|i| vec![7u8; 1 + i % 512].into_boxed_slice())
        .collect();
    let layout = Layout::from_size_align(64, 8).unwrap();
    for round in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        // SAFETY: fork in a test; the child only uses the allocator and then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut ok = inherited.iter().all(|b| b.iter().all(|&x| x == 7));
            drop(inherited);
            let mut mine = Vec::new();
            for i in 0..20_000 {
                mine.push(format!("child {round} {i}"));
            }
            ok &= mine
                .iter()
                .enumerate()
                .all(|(i, s)| s.ends_with(&format!(" {i}")));
            drop(mine);
            // A thread in the child, too.
            let t = std::thread::spawn(|| {
                (0..1000)
                    .map(|i| vec![i as u8; 100])
                    .filter(|v| v[99] == v[0])
                    .count()
            });
            ok &= t.join().map(|n| n == 1000).unwrap_or(false);
            // SAFETY: `layout` is non-zero; the block is freed once before `_exit`, which ends
            // the child without running destructors.
            unsafe {
                let p = alloc(layout);
                ok &= !p.is_null();
                dealloc(p, layout);
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert!(
            libc::WIFEXITED(status),
            "child {round} died: status {status:#x}"
        );
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "child {round} failed its checks"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
    assert!(inherited.iter().all(|b| b.iter().all(|&x| x == 7)));
}
