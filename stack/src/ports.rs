//! TEMP stub.
use std::net::{IpAddr, SocketAddr};
/// stub
pub struct EphemeralPorts {
    lo: u16,
    hi: u16,
    next: u32,
}
impl EphemeralPorts {
    /// stub
    pub fn new(range: (u16, u16), _secret: [u8; 16]) -> Self {
        EphemeralPorts {
            lo: range.0,
            hi: range.1,
            next: 0,
        }
    }
    /// stub
    pub fn range(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }
    /// stub
    pub fn allocate(
        &mut self,
        _l: IpAddr,
        _r: SocketAddr,
        mut is_free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let n = (self.hi - self.lo) as u32 + 1;
        for i in 0..n {
            let p = self.lo + ((self.next + i) % n) as u16;
            if is_free(p) {
                self.next = self.next.wrapping_add(i + 1);
                return Some(p);
            }
        }
        None
    }
}
