//! [`ReservingAllocator`]: the system allocator, except that an allocation of at least
//! [`RESERVED_BYTES_MIN`] is an anonymous mapping made with `MAP_NORESERVE`: address space is
//! reserved, and memory is committed only as pages are touched.
//!
//! Why: some decoders of untrusted bytes size a `Vec` from a count read off the wire before they
//! read a single element. `kafka-protocol` 0.18 does so for every array of every Kafka request
//! (its upstream fixes are open pull requests). A request of a few bytes that claims two billion
//! elements then asks for hundreds of gigabytes; `malloc` fails and the process aborts, taking
//! every partition on the node down. With this allocator such a request gets address space it
//! never touches: the decoder fails on the missing elements and the mapping is released, so the
//! memory used tracks the bytes received, which the listeners bound. Quipu itself never makes an
//! allocation that large on purpose (segments are mapped files, entries are at most tens of MiB).
//!
//! Safety contract: a large block is handed out only from a successful `mmap` of exactly the
//! rounded-up size, zero-initialized by the kernel, page-aligned (so any alignment up to the page
//! size holds; larger alignments go to the system allocator), and returned with `munmap` of the
//! same pointer and size, which are both derived from the `Layout` the caller must pass back.
//! Small blocks never meet large ones: the size of the layout decides, at allocation and at
//! release alike, and `realloc` across the threshold moves the block.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;

use rustix::mm::{MapFlags, ProtFlags};

/// Allocations of at least this many bytes are reserved mappings.
pub const RESERVED_BYTES_MIN: usize = 1 << 30;

/// Page size assumed for alignment: the smallest on the platforms Quipu runs on.
const PAGE_BYTES: usize = 4096;

/// See the crate documentation.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReservingAllocator;

fn is_reserved(layout: Layout) -> bool {
    layout.size() >= RESERVED_BYTES_MIN && layout.align() <= PAGE_BYTES
}

fn rounded(size: usize) -> usize {
    size.div_ceil(PAGE_BYTES).saturating_mul(PAGE_BYTES)
}

unsafe fn reserve(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping aliases nothing; its size is non-zero.
    let mapped = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            rounded(size),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    };
    mapped.map_or(std::ptr::null_mut(), |p| p.cast::<u8>())
}

unsafe fn release(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` and `rounded(size)` are exactly what `reserve` mapped (the caller passes
    // back the layout it allocated with). A failure leaves the mapping in place: a leak of
    // address space, never of safety.
    let _ = unsafe { rustix::mm::munmap(ptr.cast::<c_void>(), rounded(size)) };
}

// SAFETY: see the crate's safety contract above.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_reserved(layout) {
            // SAFETY: size is at least RESERVED_BYTES_MIN, so non-zero.
            unsafe { reserve(layout.size()) }
        } else {
            // SAFETY: forwarded as received.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_reserved(layout) {
            // SAFETY: anonymous mappings are zero-filled by the kernel.
            unsafe { reserve(layout.size()) }
        } else {
            // SAFETY: forwarded as received.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_reserved(layout) {
            // SAFETY: a reserved layout was allocated by `reserve` with the same size.
            unsafe { release(ptr, layout.size()) }
        } else {
            // SAFETY: a small layout was allocated by the system allocator.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !is_reserved(layout) && !is_reserved(new_layout) {
            // SAFETY: both sides are the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold, or within reserved blocks: move.
        // SAFETY: `new_layout` is valid; the old block is live and at least min(sizes) long.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: ReservingAllocator = ReservingAllocator;

    /// Pins the abort that a Kafka request claiming two billion topics caused: the capacity is
    /// reserved, not committed, and released when the vector goes.
    #[test]
    fn a_huge_capacity_from_a_hostile_count_does_not_abort() {
        for _ in 0..3 {
            let mut claimed: Vec<[u8; 96]> = Vec::with_capacity(i32::MAX as usize);
            claimed.push([1; 96]);
            claimed.push([2; 96]);
            assert_eq!(claimed[1][0], 2);
        }
    }

    #[test]
    fn blocks_grow_and_shrink_across_the_threshold_keeping_their_contents() {
        let mut bytes: Vec<u8> = vec![7; 1024];
        bytes.reserve_exact(RESERVED_BYTES_MIN);
        assert!(bytes.iter().all(|b| *b == 7));
        bytes.push(8);
        bytes.shrink_to_fit();
        assert_eq!(bytes.len(), 1025);
        assert_eq!(bytes[1024], 8);
        let zeroed: Vec<u8> = vec![0; RESERVED_BYTES_MIN + 1];
        assert_eq!(zeroed[RESERVED_BYTES_MIN], 0);
    }
}
