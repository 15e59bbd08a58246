//! The process allocator: mimalloc, counting the bytes live on the heap and their peak.
//!
//! glibc malloc maps and unmaps every large tensor buffer (its dynamic mmap threshold starts at
//! 128 KiB, so each op page-faults fresh pages), costing up to 2.6x on CPU
//! (`docs/performance.md`); mimalloc keeps them. The counts let `blip2 bench`
//! tell the peak of live tensors from the peak resident set: the difference is what the
//! allocator holds beyond them (freed pages kept for reuse, fragmentation).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct CountingMiMalloc {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingMiMalloc {
    pub const fn new() -> Self {
        Self { live: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Highest `live_bytes` so far.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn grew(&self, by: usize) {
        let now = self.live.fetch_add(by, Ordering::Relaxed) + by;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(&self, by: usize) {
        self.live.fetch_sub(by, Ordering::Relaxed);
    }
}

impl Default for CountingMiMalloc {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        mimalloc::MiMalloc.dealloc(ptr, layout);
        self.shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = mimalloc::MiMalloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            self.shrank(layout.size());
            self.grew(new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_and_peak_bytes() {
        let a = CountingMiMalloc::new();
        unsafe {
            let l1 = Layout::from_size_align(1000, 8).unwrap();
            let l2 = Layout::from_size_align(500, 8).unwrap();
            let p1 = a.alloc(l1);
            let p2 = a.alloc_zeroed(l2);
            assert_eq!(a.live_bytes(), 1500);
            a.dealloc(p1, l1);
            assert_eq!(a.live_bytes(), 500);
            let p2 = a.realloc(p2, l2, 2000);
            assert_eq!(a.live_bytes(), 2000);
            assert_eq!(a.peak_bytes(), 2000);
            a.dealloc(p2, Layout::from_size_align(2000, 8).unwrap());
            assert_eq!((a.live_bytes(), a.peak_bytes()), (0, 2000));
        }
    }
}
