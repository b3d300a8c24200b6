//! A pcap tee: writes packets in the classic libpcap file format, which Wireshark, tshark
//! and tcpdump open.
//!
//! This module owns the byte layout of the file: one global header, then one record header
//! and the packet bytes per packet, all little-endian, microsecond timestamps. It must never
//! read a clock (timestamps are passed in, as everywhere in fourtuple), open a file itself,
//! or alter the packets it records beyond cutting them to [`SNAPLEN`].
//!
//! Format (libpcap "classic", as documented by tcpdump.org's pcap-savefile page):
//!
//! ```text
//! global header, 24 bytes: magic 0xa1b2c3d4, version 2.4, thiszone 0, sigfigs 0,
//!                          snaplen, link type
//! record header, 16 bytes: ts_sec, ts_usec, incl_len, orig_len; then incl_len bytes
//! ```

use std::io::{self, Write};

use fourtuple_stack::Instant;

/// The magic number of a microsecond-resolution classic pcap file.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// The format's major version.
pub const VERSION_MAJOR: u16 = 2;
/// The format's minor version.
pub const VERSION_MINOR: u16 = 4;
/// The largest number of bytes recorded per packet; longer packets are cut, keeping their
/// original length in the record header.
pub const SNAPLEN: u32 = 65_535;
/// Length of the global header.
pub const GLOBAL_HEADER_LEN: usize = 24;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// What the recorded packets start with.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Raw IPv4 or IPv6 packets, as a TUN device moves them (`LINKTYPE_RAW`, 101).
    Raw,
    /// Ethernet frames, as an AF_PACKET socket moves them (`LINKTYPE_ETHERNET`, 1).
    Ethernet,
}

impl LinkType {
    /// The `LINKTYPE_*` number written in the global header.
    pub fn code(self) -> u32 {
        match self {
            LinkType::Raw => 101,
            LinkType::Ethernet => 1,
        }
    }
}

/// Splits a microsecond timestamp into pcap's `(ts_sec, ts_usec)`.
///
/// Seconds are stored in 32 bits; a timestamp past `u32::MAX` seconds (year 2106 for a Unix
/// epoch) wraps.
pub fn split_timestamp(ts: Instant) -> (u32, u32) {
    let micros = ts.micros();
    ((micros / 1_000_000) as u32, (micros % 1_000_000) as u32)
}

/// Writes a classic pcap stream to `W`.
///
/// Each call writes straight through to `W`; wrap a file in a [`std::io::BufWriter`] when
/// recording many packets, and call [`PcapWriter::flush`] before reading the file.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    link_type: LinkType,
    packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header for `link_type` to `out` and returns a writer for records.
    pub fn new(mut out: W, link_type: LinkType) -> io::Result<PcapWriter<W>> {
        let mut header = [0u8; GLOBAL_HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
        header[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        header[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // thiszone (8..12) and sigfigs (12..16) stay zero.
        header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        header[20..24].copy_from_slice(&link_type.code().to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter {
            out,
            link_type,
            packets: 0,
        })
    }

    /// Records `data` as seen at `ts`; packets longer than [`SNAPLEN`] are cut to it.
    pub fn write_packet(&mut self, ts: Instant, data: &[u8]) -> io::Result<()> {
        let (sec, usec) = split_timestamp(ts);
        let orig_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let incl_len = orig_len.min(SNAPLEN);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&sec.to_le_bytes());
        header[4..8].copy_from_slice(&usec.to_le_bytes());
        header[8..12].copy_from_slice(&incl_len.to_le_bytes());
        header[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&data[..incl_len as usize])?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The link type given at creation.
    pub fn link_type(&self) -> LinkType {
        self.link_type
    }

    /// Packets recorded so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives back the underlying writer, without flushing it.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny reader for what the writer produces: little-endian, microsecond magic.
    struct Record {
        sec: u32,
        usec: u32,
        orig_len: u32,
        data: Vec<u8>,
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    fn read_pcap(bytes: &[u8]) -> (u32, Vec<Record>) {
        assert!(bytes.len() >= GLOBAL_HEADER_LEN);
        assert_eq!(u32_at(bytes, 0), MAGIC_MICROS);
        assert_eq!(u16_at(bytes, 4), 2);
        assert_eq!(u16_at(bytes, 6), 4);
        let snaplen = u32_at(bytes, 16);
        let link = u32_at(bytes, 20);
        let mut records = Vec::new();
        let mut at = GLOBAL_HEADER_LEN;
        while at < bytes.len() {
            let incl = u32_at(bytes, at + 8) as usize;
            assert!(incl as u32 <= snaplen);
            let start = at + RECORD_HEADER_LEN;
            records.push(Record {
                sec: u32_at(bytes, at),
                usec: u32_at(bytes, at + 4),
                orig_len: u32_at(bytes, at + 12),
                data: bytes[start..start + incl].to_vec(),
            });
            at = start + incl;
        }
        assert_eq!(at, bytes.len(), "no trailing bytes");
        (link, records)
    }

    #[test]
    fn global_header_bytes_exact() {
        let w = PcapWriter::new(Vec::new(), LinkType::Raw).unwrap();
        assert_eq!(
            w.into_inner(),
            [
                0xd4, 0xc3, 0xb2, 0xa1, // magic, little-endian
                2, 0, 4, 0, // version 2.4
                0, 0, 0, 0, // thiszone
                0, 0, 0, 0, // sigfigs
                0xff, 0xff, 0, 0, // snaplen 65535
                101, 0, 0, 0, // LINKTYPE_RAW
            ]
        );
        let w = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
        assert_eq!(w.link_type(), LinkType::Ethernet);
        assert_eq!(&w.get_ref()[20..24], &[1, 0, 0, 0]);
    }

    #[test]
    fn record_header_fields() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Raw).unwrap();
        w.write_packet(Instant::from_micros(3_000_250), &[9, 8, 7])
            .unwrap();
        let bytes = w.into_inner();
        let rec = &bytes[GLOBAL_HEADER_LEN..];
        assert_eq!(
            rec,
            [
                3, 0, 0, 0, // ts_sec
                0xfa, 0, 0, 0, // ts_usec = 250
                3, 0, 0, 0, // incl_len
                3, 0, 0, 0, // orig_len
                9, 8, 7,
            ]
        );
    }

    #[test]
    fn oversize_packet_cut_to_snaplen() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
        let big = vec![0xabu8; SNAPLEN as usize + 100];
        w.write_packet(Instant::ZERO, &big).unwrap();
        let (_, records) = read_pcap(&w.into_inner());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].data.len(), SNAPLEN as usize);
        assert_eq!(records[0].orig_len, SNAPLEN + 100);
    }

    #[test]
    fn round_trip() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Raw).unwrap();
        let packets: Vec<(u64, Vec<u8>)> = (0..50u64)
            .map(|i| (i * 123_457, (0..i * 3).map(|b| b as u8 ^ 0x5a).collect()))
            .collect();
        for (ts, data) in &packets {
            w.write_packet(Instant::from_micros(*ts), data).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.packets(), 50);
        let (link, records) = read_pcap(&w.into_inner());
        assert_eq!(link, 101);
        assert_eq!(records.len(), packets.len());
        for ((ts, data), rec) in packets.iter().zip(&records) {
            assert_eq!(u64::from(rec.sec) * 1_000_000 + u64::from(rec.usec), *ts);
            assert!(rec.usec < 1_000_000);
            assert_eq!(rec.orig_len as usize, data.len());
            assert_eq!(&rec.data, data);
        }
    }

    /// A minimal IPv4/UDP packet (checksums zero, which IPv4 readers only flag).
    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0,
            0,
            64,
            17,
            0,
            0,
            192,
            0,
            2,
            1,
            192,
            0,
            2,
            2,
        ];
        let udp_len = 8 + payload.len();
        p.extend_from_slice(&[0x30, 0x39, 0, 9, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn external_reader_opens_file() {
        let tool = ["tshark", "tcpdump"].into_iter().find(|t| {
            std::process::Command::new(t)
                .arg("--version")
                .output()
                .is_ok()
        });
        let Some(tool) = tool else {
            println!("skipped external_reader_opens_file: neither tshark nor tcpdump is installed");
            return;
        };
        let path = std::env::temp_dir().join(format!(
            "fourtuple-netdev-pcap-test-{}.pcap",
            std::process::id()
        ));
        {
            let file = std::fs::File::create(&path).unwrap();
            let mut w = PcapWriter::new(io::BufWriter::new(file), LinkType::Raw).unwrap();
            for i in 0..3u64 {
                w.write_packet(Instant::from_micros(i * 1_000), &ipv4_udp(b"hello"))
                    .unwrap();
            }
            w.flush().unwrap();
        }
        let out = std::process::Command::new(tool)
            .args(["-n", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 3, "{tool} output:\n{stdout}");
        assert!(stdout.contains("192.0.2.1"), "{tool} output:\n{stdout}");
    }
}
