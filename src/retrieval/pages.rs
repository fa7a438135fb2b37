//! A read-mostly byte buffer in memory advised for transparent huge pages.
//!
//! The approximate index's walk at 10^6 items reads one node after another
//! from all over a few hundred MiB: each hop is a cache miss and, in 4 KiB
//! pages, a TLB miss too. Where the kernel's transparent huge pages are in
//! `madvise` mode (the common default), only memory that asks for them gets
//! them, and usearch's own allocations do not ask. So the graph is kept in
//! this buffer, which does, and usearch views it in place
//! (`Index::view_from_buffer`). Written by hand (one `mmap`, one `madvise`,
//! one `munmap`, through `libc`, already a dependency) because the start
//! must be 2 MiB-aligned for the first huge page to be used, which
//! `memmap2`'s anonymous maps do not offer.
//!
//! Elsewhere than Linux, or where the kernel refuses the advice, it is plain
//! anonymous memory: the same bytes, in small pages (outside Unix, a `Vec`).

use std::io;

/// Huge pages on x86-64 and most aarch64 kernels.
#[cfg(unix)]
const HUGE_PAGE: usize = 2 << 20;

/// `len` bytes at a 2 MiB-aligned address, zeroed, owned until drop.
#[cfg(unix)]
pub struct HugePageBuffer {
    /// The whole mapping (for `munmap`): `len` rounded up, plus slack to
    /// align the start.
    base: *mut libc::c_void,
    mapped: usize,
    /// The aligned start and the length asked for.
    start: *mut u8,
    len: usize,
}

// The buffer is plain memory owned by this value; it is written only
// through `&mut self` and read through `&self`, as a `Vec<u8>` would be.
#[cfg(unix)]
unsafe impl Send for HugePageBuffer {}
#[cfg(unix)]
unsafe impl Sync for HugePageBuffer {}

#[cfg(not(unix))]
pub struct HugePageBuffer {
    bytes: Vec<u8>,
}

#[cfg(not(unix))]
impl HugePageBuffer {
    pub fn zeroed(len: usize) -> io::Result<HugePageBuffer> {
        Ok(HugePageBuffer {
            bytes: vec![0; len],
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl HugePageBuffer {
    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> io::Result<HugePageBuffer> {
        let mut buffer = HugePageBuffer::zeroed(bytes.len())?;
        buffer.as_mut_slice().copy_from_slice(bytes);
        Ok(buffer)
    }
}

#[cfg(unix)]
impl HugePageBuffer {
    /// Zeroed memory of `len` bytes (at least one page is mapped).
    pub fn zeroed(len: usize) -> io::Result<HugePageBuffer> {
        let rounded = len.max(1).div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let mapped = rounded
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "buffer too large"))?;
        // SAFETY: an anonymous private mapping, not tied to any file or to
        // memory Rust knows of; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let offset = (HUGE_PAGE - base as usize % HUGE_PAGE) % HUGE_PAGE;
        // SAFETY: `offset < HUGE_PAGE` and `offset + rounded <= mapped`.
        let start = unsafe { (base as *mut u8).add(offset) };
        #[cfg(target_os = "linux")]
        // SAFETY: advice on a range inside our own mapping; a refusal (THP
        // off, an old kernel) leaves ordinary pages, which is fine.
        unsafe {
            libc::madvise(start as *mut libc::c_void, rounded, libc::MADV_HUGEPAGE);
        }
        Ok(HugePageBuffer {
            base,
            mapped,
            start,
            len,
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `start..start + len` lies inside the live mapping, which
        // was zeroed by the kernel, so every byte is initialised.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.start, self.len) }
    }
}

#[cfg(unix)]
impl Drop for HugePageBuffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `zeroed`, unmapped once; no slice of it
        // outlives `self` (they borrow it).
        unsafe {
            libc::munmap(self.base, self.mapped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_bytes_copied_in_at_an_aligned_start() {
        let bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let buffer = HugePageBuffer::copy_of(&bytes).unwrap();
        assert_eq!(buffer.as_slice(), &bytes[..]);
        #[cfg(unix)]
        {
            assert_eq!(buffer.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
            assert!(buffer.mapped >= bytes.len() + HUGE_PAGE);
        }
        let empty = HugePageBuffer::zeroed(0).unwrap();
        assert!(empty.as_slice().is_empty());
    }
}
