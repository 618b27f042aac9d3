//! The address-space reservation: one range of virtual memory taken up front, from which small
//! and medium arenas are carved, so that a size-less `free` (the `LD_PRELOAD` library's) knows a
//! small block of ours with one subtraction and one compare ([`crate::gate::Fast::free_small_open`])
//! instead of a lookup in the arena map. The technique of mimalloc's and snmalloc's reserved
//! regions.
//!
//! * Opt-in ([`enable`], which [`crate::raw::reserve_address_space`] calls): a Rust program using
//!   [`crate::SmallArena`] knows every block's layout and gains nothing from it.
//! * 64-bit Linux only. [`crate::gate::SMALL_SPAN`] bytes for small arenas (1 MiB slots), then
//!   [`crate::gate::MEDIUM_SPAN`] bytes for medium ones (4 MiB slots), mapped `PROT_READ`,
//!   `MAP_NORESERVE` on the first arena after [`enable`]: address space, no memory (untouched
//!   pages read as the shared zero page), and no commit charge, even under strict overcommit
//!   (only writable private mappings are charged). It counts towards `RLIMIT_AS` and the
//!   process's virtual size.
//! * Carving an arena is `mprotect(PROT_READ | PROT_WRITE)` of its slot: fresh zero pages,
//!   charged as a fresh `mmap` would be. Giving one back maps a fresh `PROT_READ` range over the
//!   slot (`MAP_FIXED`): its pages go back to the OS, the slot reads as zeros again (so a stale
//!   `free` into it finds pools that serve nothing, and aborts with its one-line message), and it
//!   can be carved again. The range is never unmapped, so no other mapping ever lands in it.
//! * Under a finite `RLIMIT_AS` an arena is carved only if the process's virtual size (the
//!   reservation included) plus every carved arena plus the new one fits under the limit, as if
//!   each arena were a mapping of its own beside the reservation: a program that limits its
//!   address space to a little above what it uses still sees new arenas refused, as without the
//!   reservation.
//! * When the reservation cannot be made, or a part is full, arenas are mapped one by one as
//!   before ([`crate::os::map_aligned`]), published in the arena map, and found there.
//!
//! Every arena, carved or not, is published in the arena map as well, so [`crate::raw::owns`]
//! and every other map user see them all.

#[cfg(all(target_pointer_width = "64", not(any(miri, loom))))]
mod imp {
    use crate::arena_map::Kind;
    use crate::gate;
    use crate::lock::Locked;
    use crate::tunables::{ARENA_SIZE, MEDIUM_ARENA_SIZE};
    use core::cell::UnsafeCell;
    use crate::sync::{AtomicBool, Ordering};

    /// Slots of each part.
    const SMALL_SLOTS: usize = gate::SMALL_SPAN / ARENA_SIZE;
    const MEDIUM_SLOTS: usize = gate::MEDIUM_SPAN / MEDIUM_ARENA_SIZE;
    const WORD_BITS: usize = usize::BITS as usize;

    /// One part's slots.
    ///
    /// Invariants (under the arena lock): bit `s` of `used` is set exactly while slot `s` is an
    /// arena (carved, or given back but lost: see [`give_back`]); every slot at or above `top`
    /// has never been carved; every slot below it with its bit clear reads as zeros, `PROT_READ`.
    struct Part<const W: usize> {
        used: [usize; W],
        top: usize,
    }

    impl<const W: usize> Part<W> {
        /// A free slot, marked used: the lowest one given back, else the next never used.
        fn take(&mut self, slots: usize) -> Option<usize> {
            for (i, w) in self.used.iter_mut().enumerate() {
                let free = !*w;
                if free != 0 {
                    let s = i * WORD_BITS + free.trailing_zeros() as usize;
                    if s < self.top {
                        *w |= 1 << (s % WORD_BITS);
                        return Some(s);
                    }
                    break;
                }
            }
            let s = self.top;
            if s >= slots {
                return None;
            }
            self.top += 1;
            *self.used.get_mut(s / WORD_BITS)? |= 1 << (s % WORD_BITS);
            Some(s)
        }

        fn release(&mut self, s: usize) {
            if let Some(w) = self.used.get_mut(s / WORD_BITS) {
                *w &= !(1 << (s % WORD_BITS));
            }
        }
    }

    /// The reservation's bookkeeping.
    struct State {
        /// Whether the reservation was tried (made or refused): it is tried once per process.
        tried: bool,
        /// Bytes of arenas carved now (counted against `RLIMIT_AS` a second time, see
        /// [`fits_address_limit`]).
        carved: usize,
        small: Part<{ SMALL_SLOTS / WORD_BITS }>,
        medium: Part<{ MEDIUM_SLOTS / WORD_BITS }>,
    }

    struct Global(UnsafeCell<State>);
    // SAFETY: the state is only touched while holding the arena lock (every function here takes
    // a `Locked`).
    unsafe impl Sync for Global {}

    static STATE: Global = Global(UnsafeCell::new(State {
        tried: false,
        carved: 0,
        small: Part {
            used: [0; SMALL_SLOTS / WORD_BITS],
            top: 0,
        },
        medium: Part {
            used: [0; MEDIUM_SLOTS / WORD_BITS],
            top: 0,
        },
    }));

    /// Whether arenas are to be carved from a reservation.
    static ENABLED: AtomicBool = AtomicBool::new(false);

    fn state(_locked: &mut Locked) -> &mut State {
        // SAFETY: holding a `Locked` means holding the arena lock, and `&mut` makes the borrow
        // unique.
        unsafe { &mut *STATE.0.get() }
    }

    #[inline]
    pub(crate) fn enable() {
        if !ENABLED.load(Ordering::Relaxed) {
            ENABLED.store(true, Ordering::Relaxed);
        }
    }

    /// Maps the reservation (`PROT_READ`, `MAP_NORESERVE`), aligned to a medium arena; its
    /// start, or `None` when the OS refuses.
    fn reserve() -> Option<usize> {
        let span = gate::SMALL_SPAN + gate::MEDIUM_SPAN;
        let over = span + MEDIUM_ARENA_SIZE;
        // SAFETY: a new anonymous mapping at an address the kernel picks; nothing else is touched.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                over,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p.addr();
        let base = (start + MEDIUM_ARENA_SIZE - 1) & !(MEDIUM_ARENA_SIZE - 1);
        let head = base - start;
        let tail = over - head - span;
        // SAFETY: trimming our own fresh mapping outside the kept range.
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap(p.cast::<u8>().add(head + span).cast(), tail);
            }
        }
        Some(base)
    }

    /// Whether carving `size` more bytes fits under the soft `RLIMIT_AS` (always, when it is
    /// infinite): the process's virtual size (the whole reservation included), plus the arenas
    /// carved so far, plus `size`, as if every arena were a mapping of its own beside the
    /// reservation. So a program that limits its address space to a little above what it uses
    /// (the reservation included) sees new arenas refused as it would without the reservation.
    fn fits_address_limit(carved: usize, size: usize) -> bool {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `rl` is a valid, writable rlimit; getrlimit allocates nothing.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) } != 0
            || rl.rlim_cur == libc::RLIM_INFINITY
        {
            return true;
        }
        let vm = crate::os::address_space();
        vm.saturating_add(carved).saturating_add(size) as u64 <= rl.rlim_cur
    }

    /// A new arena of `kind` carved from the reservation (made on the first call after
    /// [`enable`]): readable, writable, zero-filled, aligned to its size. `None` when not
    /// enabled, when the reservation could not be made, when its part for `kind` is full, or
    /// when the OS refuses the memory; the caller then maps the arena on its own.
    pub(crate) fn take(locked: &mut Locked, kind: Kind) -> Option<*mut u8> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        let fast = gate::fast();
        let base = match fast.base() {
            Some(b) => b,
            None => {
                let st = state(locked);
                if st.tried {
                    return None;
                }
                st.tried = true;
                let b = reserve()?;
                fast.set_base(b);
                b
            }
        };
        let size = kind.arena_size();
        if !fits_address_limit(state(locked).carved, size) {
            return None;
        }
        let st = state(locked);
        let (slot, start) = match kind {
            Kind::Small => (st.small.take(SMALL_SLOTS)?, base),
            Kind::Medium => (st.medium.take(MEDIUM_SLOTS)?, base + gate::SMALL_SPAN),
        };
        let p = core::ptr::with_exposed_provenance_mut::<u8>(start + slot * size);
        // SAFETY: the slot is part of our reservation and no arena (per the bitmap just updated).
        if unsafe { libc::mprotect(p.cast(), size, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            // Not carved: the slot stays `PROT_READ` and zero.
            let st = state(locked);
            match kind {
                Kind::Small => st.small.release(slot),
                Kind::Medium => st.medium.release(slot),
            }
            return None;
        }
        st_carved(locked, size as isize);
        Some(p)
    }

    /// Counts `delta` bytes of arenas carved (negative: given back).
    fn st_carved(locked: &mut Locked, delta: isize) {
        let st = state(locked);
        st.carved = st.carved.wrapping_add_signed(delta);
    }

    /// Gives back the arena of `kind` at `p` if it was carved from the reservation (true); false
    /// for any other arena, which the caller unmaps itself. The arena must be withdrawn from the
    /// arena map already and hold no live block.
    pub(crate) fn give_back(locked: &mut Locked, kind: Kind, p: *mut u8) -> bool {
        let Some(base) = gate::fast().base() else {
            return false;
        };
        let off = p.addr().wrapping_sub(base);
        let (slot, ok) = match kind {
            Kind::Small => (off / ARENA_SIZE, off < gate::SMALL_SPAN),
            Kind::Medium => {
                let m = off.wrapping_sub(gate::SMALL_SPAN);
                (m / MEDIUM_ARENA_SIZE, m < gate::MEDIUM_SPAN)
            }
        };
        if !ok {
            return false;
        }
        let size = kind.arena_size();
        // SAFETY: the arena is ours and dead (per the caller); a fresh mapping replaces it in
        // place, so the range never leaves the reservation.
        let fresh = unsafe {
            libc::mmap(
                p.cast(),
                size,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if fresh == libc::MAP_FAILED {
            // The slot keeps its pages and stays marked used: it is never carved again (a carved
            // arena must read as zeros), and never unmapped (the range stays ours).
            return true;
        }
        let st = state(locked);
        match kind {
            Kind::Small => st.small.release(slot),
            Kind::Medium => st.medium.release(slot),
        }
        st_carved(locked, -(size as isize));
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn slots_are_reused_lowest_first_and_the_parts_end() {
            let mut p = Part::<2> {
                used: [0; 2],
                top: 0,
            };
            let slots = 2 * WORD_BITS;
            assert_eq!(p.take(slots), Some(0));
            assert_eq!(p.take(slots), Some(1));
            assert_eq!(p.take(slots), Some(2));
            p.release(1);
            p.release(0);
            assert_eq!(p.take(slots), Some(0));
            assert_eq!(p.take(slots), Some(1));
            assert_eq!(p.take(slots), Some(3));
            while p.take(slots).is_some() {}
            assert_eq!(p.top, slots);
            assert!(p.used.iter().all(|&w| w == usize::MAX));
            p.release(70);
            assert_eq!(p.take(slots), Some(70));
            assert_eq!(p.take(slots), None);
        }
    }
}

#[cfg(not(all(target_pointer_width = "64", not(any(miri, loom)))))]
mod imp {
    //! No reservation on 32-bit targets (no room), under Miri and under loom.
    use crate::arena_map::Kind;
    use crate::lock::Locked;

    pub(crate) fn enable() {}

    pub(crate) fn take(_locked: &mut Locked, _kind: Kind) -> Option<*mut u8> {
        None
    }

    pub(crate) fn give_back(_locked: &mut Locked, _kind: Kind, _p: *mut u8) -> bool {
        false
    }
}

pub(crate) use imp::{enable, give_back, take};
