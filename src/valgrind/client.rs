//! Valgrind client requests, issued directly with `core::arch::asm!`: no header, no bindings
//! generator, no C compiler, and nothing here can panic or allocate.
//!
//! ## The protocol
//! Source: Valgrind's public headers `valgrind.h` (`VALGRIND_DO_CLIENT_REQUEST_EXPR`) and
//! `memcheck.h`. A client request is a six-word array `[request, arg1, .., arg5]` handed to a
//! "special instruction sequence": a preamble of rotates of one register by 3, 13, 61 and 51 bits
//! (128 in all, so natively the register is unchanged), then a marker instruction that is a no-op
//! natively. On a real CPU the sequence does nothing, so the result register still holds the
//! default the caller put there; Valgrind's instruction decoder recognises the exact bytes and
//! replaces the result with its answer.
//!
//! | target | preamble register | marker | array address | default in / result out |
//! |---|---|---|---|---|
//! | x86_64 Linux | `rdi` (`rol` by 3, 13, 61, 51) | `xchg rbx, rbx` | `rax` | `rdx` |
//! | aarch64 Linux | `x12` (`ror` by 3, 13, 51, 61) | `orr x10, x10, x10` | `x4` | `x3` |
//!
//! The request numbers come from the same headers, whose enums are marked as an ABI that "DO NOT
//! CHANGE": they have kept their values since they were introduced, so hard-coding them is as safe
//! as including the header.
//!
//! ## Why hand-written
//! The `crabgrind` crate generated these with bindgen, which needs libclang at build time, and its
//! build substitutes dummy headers when Valgrind's are absent, whose requests then `panic!` at run
//! time: inside `GlobalAlloc`, an abort. The mechanism is a dozen instructions, so it is issued
//! here directly.
//!
//! ## Where requests are issued
//! Only on 64-bit x86_64 and aarch64 Linux (glibc or musl alike: the protocol does not involve
//! libc), with the `valgrind` cargo feature, and not under Miri (which cannot run inline
//! assembly). Everywhere else [`request`] returns its default, which is what every request answers
//! natively: "not running on Valgrind".

/// `VG_USERREQ__RUNNING_ON_VALGRIND` (`valgrind.h`): how many Valgrinds the program runs under
/// (0 natively).
pub(crate) const RUNNING_ON_VALGRIND: usize = 0x1001;
/// `VG_USERREQ__MALLOCLIKE_BLOCK` (`valgrind.h`): args `addr, size, redzone, is_zeroed`.
pub(crate) const MALLOCLIKE_BLOCK: usize = 0x1301;
/// `VG_USERREQ__FREELIKE_BLOCK` (`valgrind.h`): args `addr, redzone`.
pub(crate) const FREELIKE_BLOCK: usize = 0x1302;
/// `VG_USERREQ__RESIZEINPLACE_BLOCK` (`valgrind.h`): args `addr, old_size, new_size, redzone`.
pub(crate) const RESIZEINPLACE_BLOCK: usize = 0x130b;
/// `VG_USERREQ__CHANGE_ERR_DISABLEMENT` (`valgrind.h`): arg `1` disables error reporting for the
/// calling thread, `-1` undoes one disable (they nest).
pub(crate) const CHANGE_ERR_DISABLEMENT: usize = 0x1801;

/// `VG_USERREQ_TOOL_BASE('M','C')` (`valgrind.h`): the first of memcheck's requests.
const MEMCHECK_BASE: usize = (b'M' as usize) << 24 | (b'C' as usize) << 16;
/// `VG_USERREQ__MAKE_MEM_NOACCESS` (`memcheck.h`, base + 0): args `addr, len`.
pub(crate) const MAKE_MEM_NOACCESS: usize = MEMCHECK_BASE;
/// `VG_USERREQ__CHECK_MEM_IS_ADDRESSABLE` (`memcheck.h`, base + 4): args `addr, len`; answers 0
/// when all of it is addressable, else the first offending address (and reports an error).
pub(crate) const CHECK_MEM_IS_ADDRESSABLE: usize = MEMCHECK_BASE + 4;

/// Whether this build issues client requests at all (see the module docs). When false, every
/// [`request`] returns its default, so Valgrind is never detected and annotate mode is unavailable.
#[cfg_attr(miri, allow(dead_code))] // Only read through `ANNOTATE_SUPPORTED`, unused under Miri.
pub(crate) const SUPPORTED: bool = cfg!(all(
    feature = "valgrind",
    not(miri),
    target_os = "linux",
    target_pointer_width = "64",
    any(target_arch = "x86_64", target_arch = "aarch64"),
));

/// Issues client request `req` with arguments `args` and returns Valgrind's answer, or `default`
/// when the program runs natively (or this build does not issue requests, see [`SUPPORTED`]).
///
/// Safe to call with any values: natively the instruction sequence changes nothing; under Valgrind
/// the requests smallarena issues only change Valgrind's bookkeeping of the program (its view of
/// which bytes are allocated or addressable, and whether errors are reported), never the program's
/// own memory or registers beyond the result.
#[inline]
#[allow(unused_variables)] // `req` and `args` are unused where requests compile to the default.
pub(crate) fn request(default: usize, req: usize, args: [usize; 5]) -> usize {
    #[cfg(all(
        feature = "valgrind",
        not(miri),
        target_os = "linux",
        target_pointer_width = "64",
        target_arch = "x86_64",
    ))]
    {
        let block: [usize; 6] = [req, args[0], args[1], args[2], args[3], args[4]];
        let mut result = default;
        // SAFETY: the sequence is the client-request protocol of `valgrind.h` for amd64-linux.
        // Natively each instruction is harmless: the four rotates of `rdi` add up to 128 bits, so
        // `rdi` ends as it began, and `xchg rbx, rbx` changes nothing; `rdx` keeps the default.
        // Under Valgrind the sequence reads the six words at `rax` (a live local array, so the
        // memory operand is valid; no `nomem`/`readonly`, as for the header's "memory" clobber)
        // and writes the answer to `rdx` only, which is declared in/out. The rotates change the
        // flags, so `preserves_flags` is not claimed. Nothing is pushed or written below the stack
        // pointer, hence `nostack`.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") block.as_ptr(),
                inout("rdx") result,
                options(nostack),
            );
        }
        result
    }
    #[cfg(all(
        feature = "valgrind",
        not(miri),
        target_os = "linux",
        target_pointer_width = "64",
        target_arch = "aarch64",
    ))]
    {
        let block: [usize; 6] = [req, args[0], args[1], args[2], args[3], args[4]];
        let mut result = default;
        // SAFETY: the sequence is the client-request protocol of `valgrind.h` for arm64-linux.
        // Natively each instruction is harmless: the four rotates of `x12` add up to 128 bits, so
        // `x12` ends as it began, and `orr x10, x10, x10` changes nothing; `x3` keeps the default.
        // Under Valgrind the sequence reads the six words at `x4` (a live local array, so the
        // memory operand is valid; no `nomem`/`readonly`, as for the header's "memory" clobber)
        // and writes the answer to `x3` only, which is declared in/out. The header declares the
        // flags clobbered, so `preserves_flags` is not claimed. Nothing is pushed or written
        // below the stack pointer, hence `nostack`.
        unsafe {
            core::arch::asm!(
                "ror x12, x12, #3",
                "ror x12, x12, #13",
                "ror x12, x12, #51",
                "ror x12, x12, #61",
                "orr x10, x10, x10",
                in("x4") block.as_ptr(),
                inout("x3") result,
                options(nostack),
            );
        }
        result
    }
    #[cfg(not(all(
        feature = "valgrind",
        not(miri),
        target_os = "linux",
        target_pointer_width = "64",
        any(target_arch = "x86_64", target_arch = "aarch64"),
    )))]
    {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_headers() {
        // VG_USERREQ_TOOL_BASE('M','C') = 'M' << 24 | 'C' << 16.
        assert_eq!(MAKE_MEM_NOACCESS, 0x4d43_0000);
        assert_eq!(CHECK_MEM_IS_ADDRESSABLE, 0x4d43_0004);
    }

    /// Natively (the test runner is not under Valgrind, or requests are compiled out) every
    /// request answers its default, whatever the default is.
    #[test]
    fn natively_a_request_answers_its_default() {
        if request(0, RUNNING_ON_VALGRIND, [0; 5]) != 0 {
            return; // the test binary itself runs under Valgrind
        }
        for default in [0, 1, 0x1234_5678, usize::MAX] {
            assert_eq!(request(default, RUNNING_ON_VALGRIND, [0; 5]), default);
            assert_eq!(
                request(default, CHECK_MEM_IS_ADDRESSABLE, [8, 8, 0, 0, 0]),
                default
            );
        }
    }
}
