//! A snapshot of the allocator's state, in the spirit of CPython's `sys._debugmallocstats()`.

use crate::pool::POOL_SIZE;
use crate::size_class::{block_size, CLASS_COUNT};
use core::fmt;

/// Counters for one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class in bytes.
    pub block_size: usize,
    /// Pools currently serving this class.
    pub pools: usize,
    /// Blocks handed out and not yet freed.
    pub blocks_in_use: usize,
    /// Free blocks in this class's pools (never-used space included).
    pub free_blocks: usize,
}

/// A snapshot returned by [`crate::stats()`].
///
/// Counts are exact when no other thread is allocating; while threads run, each counter is a
/// recent value but the set of them is not one atomic picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Per size class, smallest first.
    pub classes: [ClassStats; CLASS_COUNT],
    /// Arenas mapped now.
    pub arenas_mapped: usize,
    /// Most arenas ever mapped at once.
    pub arenas_peak: usize,
    /// Bytes mapped for arenas now.
    pub bytes_mapped: usize,
    /// Bytes requested and not yet freed, over every allocation (arena and system).
    pub bytes_requested: usize,
    /// Pools free in their arenas, ready for any class.
    pub free_pools: usize,
    /// Empty pools cached by heaps for quick reuse.
    pub cached_pools: usize,
    /// Thread heaps ever created (they are reused, never unmapped).
    pub heaps: usize,
    /// Heaps whose thread has exited, waiting to be adopted.
    pub heaps_abandoned: usize,
    /// Times a heap was handed back (abandoned) since the process started: once per exiting thread
    /// that allocated, plus once per allocation made after a thread's last exit round (each borrows
    /// a heap and hands it back). A count far above the number of threads means allocation keeps
    /// happening after exit handling, where each one pays a whole handoff.
    pub heap_handoffs: usize,
}

impl Stats {
    pub(crate) fn empty() -> Stats {
        let mut classes = [ClassStats::default(); CLASS_COUNT];
        for (i, c) in classes.iter_mut().enumerate() {
            c.block_size = block_size(i);
        }
        Stats {
            classes,
            arenas_mapped: 0,
            arenas_peak: 0,
            bytes_mapped: 0,
            bytes_requested: 0,
            free_pools: 0,
            cached_pools: 0,
            heaps: 0,
            heaps_abandoned: 0,
            heap_handoffs: 0,
        }
    }

    /// Blocks in use over all classes.
    pub fn blocks_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.blocks_in_use).sum()
    }

    /// Pools serving some class.
    pub fn pools_in_use(&self) -> usize {
        self.classes.iter().map(|c| c.pools).sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "smallarena: {} mode", crate::mode::mode_name())?;
        writeln!(f, "class   size   pools   blocks in use   free blocks")?;
        writeln!(f, "-----   ----   -----   -------------   -----------")?;
        for (i, c) in self.classes.iter().enumerate() {
            if c.pools == 0 {
                continue;
            }
            writeln!(
                f,
                "{:>5}   {:>4}   {:>5}   {:>13}   {:>11}",
                i, c.block_size, c.pools, c.blocks_in_use, c.free_blocks
            )?;
        }
        let in_use_bytes: usize = self
            .classes
            .iter()
            .map(|c| c.blocks_in_use * c.block_size)
            .sum();
        writeln!(f)?;
        writeln!(
            f,
            "# arenas mapped now / peak     = {} / {}",
            self.arenas_mapped, self.arenas_peak
        )?;
        writeln!(f, "# bytes mapped                 = {}", self.bytes_mapped)?;
        writeln!(
            f,
            "# pools in use / cached / free = {} / {} / {}",
            self.pools_in_use(),
            self.cached_pools,
            self.free_pools
        )?;
        writeln!(f, "# bytes in small blocks        = {}", in_use_bytes)?;
        writeln!(
            f,
            "# bytes requested in use       = {}",
            self.bytes_requested
        )?;
        writeln!(f, "# pool size                    = {}", POOL_SIZE)?;
        writeln!(
            f,
            "# heaps (abandoned)            = {} ({})",
            self.heaps, self.heaps_abandoned
        )?;
        write!(f, "# heap handoffs                = {}", self.heap_handoffs)
    }
}
