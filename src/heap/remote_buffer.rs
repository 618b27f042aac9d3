//! The remote-free buffer: a heap batches the frees its thread makes into other heaps' pools, so
//! that a remote free costs no atomic operation until a batch goes out, and a batch costs one CAS
//! on the pool's remote list for all its blocks ([`Pool::push_remote_chain`]) instead of one per
//! block (the message-passing idea of snmalloc's remote deallocation cache).
//!
//! The buffer has [`REMOTE_SLOTS`] slots, direct-mapped by pool address. A slot holds one pool
//! and a chain of that pool's blocks, already linked through [`Block::next`] and carrying the free
//! key (so a second free of a buffered block is caught as a double free, as for any other free
//! block). A remote free links its block into its pool's slot; the slot goes out (is *flushed*)
//! when a block of another pool maps to it, or when it reaches its limit: [`REMOTE_BATCH`] blocks
//! or [`REMOTE_BATCH_BYTES`] bytes of them, whichever comes first.
//!
//! **Bound.** After any free, every slot holds fewer blocks than its limit: a thread holds at
//! most `REMOTE_SLOTS * (REMOTE_BATCH - 1)` blocks (248) of other heaps, and fewer than
//! `REMOTE_SLOTS * REMOTE_BATCH_BYTES` bytes (256 KiB) of them. The owner counts buffered blocks
//! as in use (they are in its `used`), so a pool with a buffered block is never released.
//!
//! **Where the buffer is flushed**, so no freed block is lost or hidden for long: on the heap's
//! allocation slow path (a refill), before the heap is abandoned (thread exit, and every other
//! abandon), in the `fork()` prepare handler (the forking thread's), in the child for the heaps of
//! the threads that did not survive the fork, in `smallarena::collect()` and in
//! `smallarena::stats()` (the calling thread's buffer: a thread that frees and then asks for
//! statistics sees its frees; other live threads' buffers are theirs alone, so their blocks show
//! as in use until they flush). `check_invariants()` does not flush: buffered blocks are
//! consistently counted as in use, and a checker should not change what it checks.
//!
//! **Double frees.** A second free of a buffered block by any thread but the owner is caught at
//! once (the key). The owner's own second free of a block still in another thread's buffer is
//! not: the owner confirms a key match on its free list (`free_suspect` in `heap.rs`), and the block
//! is not there yet; it is caught later only if the pool's count would wrap when the batch
//! arrives (as before batching, a double free whose first free is not yet visible to the owner).
//!
//! The buffer lives in the heap, not in a thread-local of its own: a thread buffers only while it
//! has a heap (`CURRENT` set, its exit hook armed), so a thread with no heap, or past its last exit
//! hook (`DEAD`), frees straight onto the pool's remote list; and the free path, which has the heap
//! already, reaches the buffer without another thread-local lookup (`__tls_get_addr` in the
//! preload library).
//!
//! This file holds the slot bookkeeping alone, with no atomics and no pool access, so it is
//! unit-tested (under Miri too) on its own; publishing a flushed chain is
//! [`super::remote::publish_chain`].

use crate::pool::Block;
use crate::pool::Pool;
use crate::tunables::{REMOTE_BATCH, REMOTE_BATCH_BYTES, REMOTE_SLOTS};
use core::ptr::null_mut;

/// A chain of blocks of one pool taken out of the buffer, to be spliced onto the pool's remote
/// list: `len >= 1` blocks from `head` to `tail`, linked through [`Block::next`] (`tail.next` is
/// not meaningful).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The pool all the blocks belong to.
    pub(crate) pool: *mut Pool,
    /// The first block (the most recently freed).
    pub(crate) head: *mut Block,
    /// The last block (the first freed).
    pub(crate) tail: *mut Block,
    /// Number of blocks.
    pub(crate) len: u32,
}

/// One slot: a pool and the chain of its blocks freed by this heap's thread.
///
/// Invariant: `len == 0` exactly when the slot is empty; then `pool`, `head` and `tail` are
/// null. Otherwise `head`..`tail` are `len` blocks of `pool`, linked, and
/// `len < limit`.
#[derive(Clone, Copy)]
struct Slot {
    pool: *mut Pool,
    head: *mut Block,
    tail: *mut Block,
    len: u32,
    /// Blocks that make the slot go out, for the pool's block size (see [`limit_for`]).
    limit: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        pool: null_mut(),
        head: null_mut(),
        tail: null_mut(),
        len: 0,
        limit: 0,
    };

    /// The slot's chain, leaving the slot empty (`None` if it was).
    fn take(&mut self) -> Option<Chain> {
        if self.len == 0 {
            return None;
        }
        let chain = Chain {
            pool: self.pool,
            head: self.head,
            tail: self.tail,
            len: self.len,
        };
        *self = Slot::EMPTY;
        Some(chain)
    }
}

/// A heap's remote-free buffer (see the module docs).
///
/// Invariants: each slot holds blocks of one pool only, every one of them freed by the program,
/// carrying its pool's free key and reachable from nowhere else (not on any free or remote list),
/// so they stay counted in their pool's `used` until flushed. Only the thread using the heap
/// touches the buffer (or, for an abandoned heap, the thread holding the lock).
pub(crate) struct RemoteBuffer {
    slots: [Slot; REMOTE_SLOTS],
}

/// The most blocks of `bytes` bytes a slot holds before it goes out: [`REMOTE_BATCH`], fewer when
/// that many would pass [`REMOTE_BATCH_BYTES`], at least 1 (a block that big goes out at once).
pub(crate) const fn limit_for(bytes: usize) -> u32 {
    let n = match REMOTE_BATCH_BYTES.checked_div(bytes) {
        Some(n) if n < REMOTE_BATCH => n,
        _ => REMOTE_BATCH,
    };
    if n == 0 {
        1
    } else {
        n as u32
    }
}

/// The slot of `pool`: its address in pool units (small pools are 16 KiB-aligned, medium ones
/// 256 KiB-aligned), folded so that neighbouring pools of either kind take different slots.
#[inline]
fn slot_of(pool: *mut Pool) -> usize {
    let x = pool.addr() >> crate::tunables::POOL_SIZE.trailing_zeros();
    (x ^ (x >> 4)) & (REMOTE_SLOTS - 1)
}

/// [`RemoteBuffer::push`] when the slot is empty or holds another pool: the slot starts a chain
/// for `pool` with `block`, and its previous chain goes out; a block too big to batch goes out
/// alone instead.
#[cold]
#[inline(never)]
fn claim(slot: &mut Slot, pool: *mut Pool, block: *mut Block, bytes: usize) -> Option<Chain> {
    let limit = limit_for(bytes);
    if limit <= 1 {
        return Some(Chain {
            pool,
            head: block,
            tail: block,
            len: 1,
        });
    }
    let evicted = slot.take();
    *slot = Slot {
        pool,
        head: block,
        tail: block,
        len: 1,
        limit,
    };
    evicted
}

impl RemoteBuffer {
    /// An empty buffer.
    pub(crate) const EMPTY: RemoteBuffer = RemoteBuffer {
        slots: [Slot::EMPTY; REMOTE_SLOTS],
    };

    /// Adds `block` (of `pool`, whose blocks are `bytes` bytes) to its pool's slot. Returns the
    /// chain that must go out now, if any: the slot's chain with `block` in it when that reached
    /// the slot's limit, or the slot's previous chain when it held another pool's blocks. A block
    /// whose size gives a limit of 1 ([`limit_for`]) is not buffered: it comes back at once as a
    /// chain of its own, and the slot is left as it was.
    ///
    /// # Safety
    /// `block` is a block of `pool` that the caller owns (freed by the program, on no list);
    /// it becomes the buffer's, or the returned chain's (its `next` is written).
    #[inline(always)]
    pub(crate) unsafe fn push(
        &mut self,
        pool: *mut Pool,
        block: *mut Block,
        bytes: usize,
    ) -> Option<Chain> {
        let slot = &mut self.slots[slot_of(pool)];
        // An empty slot's pool is null (never a pool's address): one compare tells both.
        if slot.pool == pool {
            // SAFETY: per the caller, the block is ours to link.
            unsafe { (*block).next = slot.head };
            slot.head = block;
            slot.len += 1;
            return if slot.len >= slot.limit {
                slot.take()
            } else {
                None
            };
        }
        claim(slot, pool, block, bytes)
    }

    /// Takes every chain out of the buffer, calling `f` on each; the buffer is empty after.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Chain)) {
        for slot in self.slots.iter_mut() {
            if let Some(chain) = slot.take() {
                f(chain);
            }
        }
    }

    /// Whether the buffer holds no block.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.len == 0)
    }

    /// Blocks held, over every slot.
    #[allow(dead_code)] // used by the tests and the invariant checker's messages
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().map(|s| s.len as usize).sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::tunables::POOL_SIZE;

    /// A pool address that is never dereferenced: the buffer only compares and hashes it.
    fn pool(n: usize) -> *mut Pool {
        core::ptr::without_provenance_mut(n * POOL_SIZE)
    }

    /// `n` blocks to free (only their link word is written).
    fn blocks(n: usize) -> Vec<Block> {
        (0..n)
            .map(|_| Block {
                next: null_mut(),
                key: 0,
            })
            .collect()
    }

    /// The blocks of a chain, head to tail, checking its length and tail.
    fn walk(c: &Chain) -> Vec<*mut Block> {
        let mut out = vec![c.head];
        while out.len() < c.len as usize {
            // SAFETY: the chain's blocks are in the test's vector, linked by `push`.
            out.push(unsafe { (*out[out.len() - 1]).next });
        }
        assert_eq!(*out.last().unwrap(), c.tail);
        out
    }

    #[test]
    fn limits_follow_the_block_size() {
        assert_eq!(limit_for(16), REMOTE_BATCH as u32);
        assert_eq!(limit_for(64), REMOTE_BATCH as u32);
        assert_eq!(limit_for(1024), 32.min(REMOTE_BATCH) as u32);
        assert_eq!(limit_for(4096), 8);
        assert_eq!(limit_for(20 * 1024), 1);
        assert_eq!(limit_for(32 * 1024), 1);
        for bytes in (16..=32 * 1024).step_by(16) {
            let l = limit_for(bytes) as usize;
            assert!((1..=REMOTE_BATCH).contains(&l));
            assert!(l == 1 || l * bytes <= REMOTE_BATCH_BYTES, "{bytes}");
        }
    }

    /// One pool: the slot goes out when it reaches its limit, as one chain of every block
    /// (last freed first), and starts afresh.
    #[test]
    fn a_full_slot_goes_out_whole() {
        let mut b = blocks(2 * REMOTE_BATCH);
        let ptrs: Vec<*mut Block> = b.iter_mut().map(|x| x as *mut Block).collect();
        let mut buf = RemoteBuffer::EMPTY;
        let p = pool(3);
        let mut out = Vec::new();
        for (i, &blk) in ptrs.iter().enumerate() {
            // SAFETY: each block is pushed once, and is the buffer's after.
            if let Some(c) = unsafe { buf.push(p, blk, 64) } {
                assert_eq!(i + 1, REMOTE_BATCH, "went out early or late");
                out.push(c);
                assert!(buf.is_empty());
            } else {
                assert_eq!(buf.len(), (i % REMOTE_BATCH) + 1);
            }
            if i + 1 == REMOTE_BATCH {
                break;
            }
        }
        assert_eq!(out.len(), 1);
        let c = out[0];
        assert_eq!((c.pool, c.len as usize), (p, REMOTE_BATCH));
        let mut want: Vec<*mut Block> = ptrs[..REMOTE_BATCH].to_vec();
        want.reverse();
        assert_eq!(walk(&c), want);
    }

    /// Two pools on one slot: the second evicts the first's chain, then holds its own block.
    #[test]
    fn a_colliding_pool_evicts_the_slot() {
        let (p, q) = (pool(1), pool(1 + REMOTE_SLOTS));
        assert_eq!(slot_of(p), slot_of(q));
        let mut b = blocks(3);
        let ptrs: Vec<*mut Block> = b.iter_mut().map(|x| x as *mut Block).collect();
        let mut buf = RemoteBuffer::EMPTY;
        // SAFETY: each block is pushed once.
        unsafe {
            assert_eq!(buf.push(p, ptrs[0], 64), None);
            assert_eq!(buf.push(p, ptrs[1], 64), None);
            let c = buf.push(q, ptrs[2], 64).expect("the old chain goes out");
            assert_eq!((c.pool, c.len), (p, 2));
            assert_eq!(walk(&c), vec![ptrs[1], ptrs[0]]);
        }
        assert_eq!(buf.len(), 1);
        let mut rest = Vec::new();
        buf.drain(|c| rest.push(c));
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].pool, rest[0].head, rest[0].len), (q, ptrs[2], 1));
        assert!(buf.is_empty());
    }

    /// Neighbouring pools, small and medium, take different slots.
    #[test]
    fn neighbouring_pools_take_different_slots() {
        let small: Vec<usize> = (0..REMOTE_SLOTS).map(|i| slot_of(pool(64 + i))).collect();
        let medium: Vec<usize> = (0..REMOTE_SLOTS)
            .map(|i| slot_of(pool((1 << 10) + 16 * i)))
            .collect();
        for set in [small, medium] {
            let mut s = set.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), REMOTE_SLOTS, "{set:?}");
        }
    }

    /// Many pools and block sizes in a pseudo-random order: every block comes out exactly once
    /// (in a chain of its own pool), and the buffer never holds more than its bound.
    #[test]
    fn every_block_comes_out_once_within_the_bound() {
        let n = if cfg!(miri) { 600 } else { 20_000 };
        let mut b = blocks(n);
        let ptrs: Vec<*mut Block> = b.iter_mut().map(|x| x as *mut Block).collect();
        let sizes = [16usize, 64, 512, 1024, 4096, 16 * 1024, 32 * 1024];
        let mut buf = RemoteBuffer::EMPTY;
        let mut seen = std::collections::HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        // A few pools, each with its block size: collisions and full slots both happen.
        let plan: Vec<(*mut Pool, usize)> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let pn = (x % 24) as usize;
                (pool(100 + pn * 5), sizes[pn % sizes.len()])
            })
            .collect();
        let pool_of: std::collections::HashMap<*mut Block, *mut Pool> =
            ptrs.iter().zip(&plan).map(|(&b, &(p, _))| (b, p)).collect();
        let take = |c: Chain, seen: &mut std::collections::HashMap<*mut Block, usize>| {
            for blk in walk(&c) {
                *seen.entry(blk).or_insert(0) += 1;
                assert_eq!(pool_of[&blk], c.pool, "block in another pool's chain");
            }
        };
        for (&blk, &(p, bytes)) in ptrs.iter().zip(&plan) {
            let held = buf.len();
            // SAFETY: each block is pushed once.
            if let Some(c) = unsafe { buf.push(p, blk, bytes) } {
                if limit_for(bytes) == 1 {
                    // Too big to batch: out alone, the buffer unchanged.
                    assert_eq!((c.head, c.len), (blk, 1));
                    assert_eq!(buf.len(), held);
                }
                take(c, &mut seen);
            }
            assert!(buf.len() <= REMOTE_SLOTS * (REMOTE_BATCH - 1));
            for s in buf.slots.iter() {
                assert!(s.len == 0 || s.len < s.limit);
            }
        }
        buf.drain(|c| take(c, &mut seen));
        assert!(buf.is_empty());
        assert_eq!(seen.len(), n, "a block was lost");
        assert!(seen.values().all(|&k| k == 1), "a block came out twice");
    }
}
