//! Cache prefetch hints for fourtuple's core.
//!
//! `fourtuple-stack` forbids unsafe code, and stable Rust offers a prefetch only through
//! `core::arch` intrinsics, which are `unsafe` to call. This crate holds that one call
//! behind a safe function that takes a reference: a prefetch has no architectural effect
//! (it cannot fault, and no later load returns anything different), so the only thing the
//! `unsafe` stands for is the target feature, which the build configuration guarantees.
//!
//! The TIME_WAIT table uses it where a lookup's cache lines are known before they are
//! read: a batch's buckets and slots, the entry that expires next, the entry a closing
//! connection will add. A demand load issued early for the same purpose holds up the
//! in-order retirement of everything behind it until it completes; a prefetch does not.

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// Asks the CPU to start loading the cache line that holds `*r` into every cache level,
/// without waiting for it.
///
/// A hint: it changes no value and never faults; where the target has no stable prefetch
/// intrinsic (anything but x86-64) it does nothing.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    #[allow(unsafe_code)]
    // SAFETY: `_mm_prefetch` requires only the `sse` target feature, which the `cfg`
    // above proves is enabled for this build (it is part of the x86-64 baseline). The
    // pointer comes from a live reference, though a prefetch would not dereference it
    // either way.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = r;
}
