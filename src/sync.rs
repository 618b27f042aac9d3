//! The one place the allocator gets its atomics, thread-locals, globals and spin lock from.
//!
//! Every shared word the allocator touches is declared with a type from this module, and every
//! global and thread-local with a macro from it, so that under `--cfg loom` the loom model
//! checker's types take their place with no other code path changing:
//!
//! * atomics: `core::sync::atomic`, or `loom::sync::atomic`;
//! * [`global!`]: a plain `static`, or a `loom::lazy_static!` (fresh in every model execution,
//!   since loom objects cannot outlive the execution that made them);
//! * [`tls!`]: a const-initialised `std` thread-local, or a `loom::thread_local!`;
//! * [`const_fn!`]: a `const fn`, or a plain `fn` (loom atomics cannot be built in const context);
//! * [`spin_wait`]: `sched_yield`, or `loom::thread::yield_now` (so loom sees the spinning).
//!
//! The spin lock guards only slow paths (arena bookkeeping, the heap list); the allocation and
//! free fast paths never take it.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};
/// The profiler's sampled-address filter (`src/profile/table.rs`); the profiler is not modelled
/// under loom.
#[cfg(all(feature = "profile", not(loom)))]
pub(crate) use core::sync::atomic::AtomicU16;

/// Declares a process-wide global (a `static` natively; a per-execution lazy static under loom).
#[cfg(not(loom))]
macro_rules! global {
    ($(#[$m:meta])* $v:vis static $name:ident: $t:ty = $init:expr;) => {
        $(#[$m])* $v static $name: $t = $init;
    };
}
#[cfg(loom)]
macro_rules! global {
    ($(#[$m:meta])* $v:vis static $name:ident: $t:ty = $init:expr;) => {
        loom::lazy_static! { $(#[$m])* static ref $name: $t = $init; }
    };
}
pub(crate) use global;

/// Declares const-initialised thread-locals (std natively; loom's under loom).
#[cfg(not(loom))]
macro_rules! tls {
    ($($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;)*) => {
        std::thread_local! { $($(#[$m])* static $name: $t = const { $init };)* }
    };
}
#[cfg(loom)]
macro_rules! tls {
    ($($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;)*) => {
        loom::thread_local! { $($(#[$m])* static $name: $t = $init;)* }
    };
}
pub(crate) use tls;

/// Declares a thread-local `Cell<*mut T>`, initially null, read on the allocation fast paths:
/// `static NAME: Cell<*mut T>;`. Its `try_with` never fails.
///
/// Normally a const-initialised `std` thread-local (loom's under loom). With the
/// `initial-exec-tls` feature on x86-64 Linux (the preload library's build), a `.tbss` word
/// reached through the initial-exec TLS model, written in assembly because stable Rust has no
/// way to choose a TLS model (`-Z tls-model` and `#[thread_local]` are nightly-only): a `cdylib`'s
/// thread-locals otherwise use the general-dynamic model, a call to `__tls_get_addr` per access.
/// Initial-exec needs the library in the static TLS block, which a library loaded at start-up
/// (`LD_PRELOAD`, or linked) always is; a library `dlopen`ed later gets a slot from glibc's
/// surplus, or fails to load when that is used up.
#[cfg(not(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux",
    not(loom),
    not(miri)
)))]
macro_rules! tls_ptr {
    ($(#[$m:meta])* static $name:ident: Cell<*mut $t:ty>;) => {
        $crate::sync::tls! { $(#[$m])* static $name: core::cell::Cell<*mut $t> =
            core::cell::Cell::new(core::ptr::null_mut()); }
    };
}
#[cfg(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux",
    not(loom),
    not(miri)
))]
macro_rules! tls_ptr {
    ($(#[$m:meta])* static $name:ident: Cell<*mut $t:ty>;) => {
        core::arch::global_asm!(
            ".pushsection .tbss.smallarena_tls,\"awT\",@nobits",
            ".p2align 3",
            concat!(".globl __smallarena_tls_", stringify!($name), "_v1"),
            concat!(".hidden __smallarena_tls_", stringify!($name), "_v1"),
            concat!(".type __smallarena_tls_", stringify!($name), "_v1,@object"),
            concat!(".size __smallarena_tls_", stringify!($name), "_v1,32"),
            concat!("__smallarena_tls_", stringify!($name), "_v1:"),
            // The word, then the three words `load_ptr_at` reads for indexes 1 to 3: never
            // written, so they read null.
            ".zero 32",
            ".popsection",
        );

        $(#[$m])*
        // A unit struct named like the static it stands for, so call sites read the same.
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        struct $name;

        impl $crate::sync::LoadPtr<$t> for $name {
            #[inline(always)]
            fn load_ptr(&'static self) -> *mut $t {
                let v: *mut $t;
                // SAFETY: loads this thread's word: its offset from the thread pointer (a GOT
                // entry the loader fills) read, then the word itself through `fs`. Reads memory
                // only (`readonly`: a store to the word in between is not crossed).
                unsafe {
                    core::arch::asm!(
                        concat!(
                            "mov {v}, qword ptr [rip + __smallarena_tls_",
                            stringify!($name),
                            "_v1@GOTTPOFF]"
                        ),
                        "mov {v}, qword ptr fs:[{v}]",
                        v = out(reg) v,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
                v
            }

            #[inline(always)]
            fn load_ptr_at(&'static self, index: usize) -> *mut $t {
                debug_assert!(index < 4);
                let v: *mut $t;
                // SAFETY: as for `load_ptr`, at `index` words past this thread's word: the
                // `.tbss` object is four words long (`index < 4`, per the caller), and the three
                // words after the cell are never written (null).
                unsafe {
                    core::arch::asm!(
                        concat!(
                            "mov {v}, qword ptr [rip + __smallarena_tls_",
                            stringify!($name),
                            "_v1@GOTTPOFF]"
                        ),
                        "mov {v}, qword ptr fs:[{v} + {i} * 8]",
                        v = out(reg) v,
                        i = in(reg) index,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
                v
            }
        }

        impl $name {
            /// Calls `f` with this thread's cell; never fails (the word lives as long as the
            /// thread and has no destructor). The `Result` matches `LocalKey::try_with`.
            #[inline(always)]
            fn try_with<R>(
                &self,
                f: impl FnOnce(&core::cell::Cell<*mut $t>) -> R,
            ) -> Result<R, core::convert::Infallible> {
                let p: *mut core::cell::Cell<*mut $t>;
                // SAFETY: reads the thread pointer (`fs:0` holds the TCB's own address on
                // x86-64 Linux) and adds the word's offset from it (a GOT entry the loader
                // fills); writes no memory, touches no stack.
                unsafe {
                    core::arch::asm!(
                        "mov {p}, qword ptr fs:[0]",
                        concat!(
                            "add {p}, qword ptr [rip + __smallarena_tls_",
                            stringify!($name),
                            "_v1@GOTTPOFF]"
                        ),
                        p = out(reg) p,
                        options(pure, readonly, nostack),
                    );
                }
                // SAFETY: `p` is this thread's 8-byte, 8-aligned `.tbss` word, null at thread
                // start, touched only through this cell by this thread; `Cell<*mut T>` has the
                // layout of `*mut T`.
                Ok(f(unsafe { &*p }))
            }
        }
    };
}
pub(crate) use tls_ptr;

/// The value of a [`tls_ptr!`] thread-local, for the fast paths: null when the thread-local is
/// gone (never, for a const-initialised `Cell` without destructor). The initial-exec variant
/// reads it with one load through `fs`, no address computed.
pub(crate) trait LoadPtr<T> {
    /// This thread's pointer.
    fn load_ptr(&'static self) -> *mut T;

    /// This thread's pointer for `index` 0, null for 1 to 3 (`index < 4`): a caller that has
    /// a small number saying "not now" folds its test into the load (the initial-exec variant
    /// reads one of three null words after the pointer, with no branch).
    #[inline(always)]
    #[cfg_attr(not(feature = "initial-exec-tls"), allow(dead_code))]
    fn load_ptr_at(&'static self, index: usize) -> *mut T {
        if index == 0 {
            self.load_ptr()
        } else {
            core::ptr::null_mut()
        }
    }
}

#[cfg(not(loom))]
impl<T: 'static> LoadPtr<T> for std::thread::LocalKey<core::cell::Cell<*mut T>> {
    #[inline(always)]
    fn load_ptr(&'static self) -> *mut T {
        self.try_with(|c| c.get()).unwrap_or(core::ptr::null_mut())
    }
}

#[cfg(loom)]
impl<T: 'static> LoadPtr<T> for loom::thread::LocalKey<core::cell::Cell<*mut T>> {
    fn load_ptr(&'static self) -> *mut T {
        self.try_with(|c| c.get()).unwrap_or(core::ptr::null_mut())
    }
}

/// A function that is `const` natively (loom's atomics have no const constructor).
#[cfg(not(loom))]
macro_rules! const_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$m])* $v const fn $name() -> $ret $body
    };
}
#[cfg(loom)]
macro_rules! const_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident() -> $ret:ty $body:block) => {
        $(#[$m])* $v fn $name() -> $ret $body
    };
}
pub(crate) use const_fn;

/// A test-and-test-and-set spin lock that yields the CPU while it waits.
///
/// It never allocates, which is why the allocator can use it: a `std::sync::Mutex` may not
/// allocate today, but nothing promises that. It is held only for short, bounded sections of the
/// slow path (taking or returning a pool, mapping or unmapping an arena, registering a heap).
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    const_fn! {
        /// An unlocked lock.
        pub(crate) fn new() -> Self {
            SpinLock {
                locked: AtomicBool::new(false),
            }
        }
    }

    /// Spins (yielding to the scheduler) until the lock is ours.
    pub(crate) fn lock(&self) {
        let mut spins = 0u32;
        loop {
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            while self.locked.load(Ordering::Relaxed) {
                spins += 1;
                if spins < 64 && !cfg!(loom) {
                    core::hint::spin_loop();
                } else {
                    spin_wait();
                }
            }
        }
    }

    /// Takes the lock if it is free, without waiting.
    pub(crate) fn try_lock(&self) -> bool {
        !self.locked.load(Ordering::Relaxed)
            && self
                .locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Releases the lock. Only the holder may call this.
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Resets the lock to unlocked in a child process after `fork()`, where the thread that
    /// took it in the prepare handler is the only thread left.
    #[cfg(not(any(miri, loom)))]
    pub(crate) fn reset_after_fork(&self) {
        self.locked.store(false, Ordering::Relaxed);
    }
}

/// Gives the CPU away while waiting for another thread.
pub(crate) fn spin_wait() {
    #[cfg(not(any(miri, loom)))]
    // SAFETY: sched_yield has no preconditions and does not allocate.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(miri)]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// The spin lock orders the plain (Relaxed) accesses made under it.
    #[test]
    fn spin_lock_orders_what_it_guards() {
        loom::model(|| {
            let shared = Arc::new((SpinLock::new(), AtomicUsize::new(0)));
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let s = shared.clone();
                    loom::thread::spawn(move || {
                        s.0.lock();
                        let v = s.1.load(Ordering::Relaxed);
                        s.1.store(v + 1, Ordering::Relaxed);
                        s.0.unlock();
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(shared.1.load(Ordering::Relaxed), 2);
        });
    }
}
