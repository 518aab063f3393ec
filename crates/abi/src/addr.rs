//! IP addresses as the datapath stores them: 16 bytes, IPv4 as IPv4-mapped IPv6.

/// An IPv6 address, or an IPv4 address in its IPv4-mapped form (`::ffff:a.b.c.d`), as raw
/// network-order bytes held in four words so the kernel can compare and copy it cheaply.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct IpAddr6 {
    /// The address bytes in network order, viewed as four native words.
    pub words: [u32; 4],
}

/// The third word of an IPv4-mapped address (bytes `00 00 ff ff`).
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl IpAddr6 {
    /// The IPv4-mapped form of an IPv4 address given as its network-order word (as read
    /// straight from an IPv4 header).
    #[inline(always)]
    pub const fn from_v4_raw(raw: u32) -> Self {
        Self {
            words: [0, 0, V4_MAPPED_WORD, raw],
        }
    }

    /// The IPv4-mapped form of an IPv4 address given as its four octets.
    pub const fn from_v4_octets(o: [u8; 4]) -> Self {
        Self::from_v4_raw(u32::from_ne_bytes(o))
    }

    /// From 16 network-order bytes.
    pub const fn from_octets(b: [u8; 16]) -> Self {
        Self {
            words: [
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
            ],
        }
    }

    /// The 16 network-order bytes.
    pub const fn octets(&self) -> [u8; 16] {
        let a = self.words[0].to_ne_bytes();
        let b = self.words[1].to_ne_bytes();
        let c = self.words[2].to_ne_bytes();
        let d = self.words[3].to_ne_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }

    /// The IPv4 octets when this is an IPv4-mapped address.
    pub const fn to_v4_octets(&self) -> Option<[u8; 4]> {
        if self.words[0] == 0 && self.words[1] == 0 && self.words[2] == V4_MAPPED_WORD {
            Some(self.words[3].to_ne_bytes())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip() {
        let a = IpAddr6::from_v4_octets([10, 244, 0, 7]);
        assert_eq!(a.to_v4_octets(), Some([10, 244, 0, 7]));
        let o = a.octets();
        assert_eq!(&o[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(IpAddr6::from_octets(o), a);
        assert_eq!(IpAddr6::from_octets([0xfe; 16]).to_v4_octets(), None);
    }
}
