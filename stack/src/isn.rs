//! TEMP stub until the real RFC 6528 generator lands.
use crate::{FourTuple, Instant, SeqNum};
use siphasher::sip::SipHasher24;
use std::hash::{Hash, Hasher};
/// stub
pub struct IsnGenerator {
    k: [u8; 16],
}
impl IsnGenerator {
    /// stub
    pub fn new(secret: [u8; 16]) -> Self {
        IsnGenerator { k: secret }
    }
    /// stub
    pub fn isn(&self, now: Instant, t: &FourTuple) -> SeqNum {
        let mut h = SipHasher24::new_with_key(&self.k);
        t.hash(&mut h);
        SeqNum((h.finish() as u32).wrapping_add((now.micros() / 4) as u32))
    }
}
