//! Which TCP ports listen where a connection to the guest's localhost reaches them: LISTEN
//! entries of /proc/net/tcp and /proc/net/tcp6 bound to 127.0.0.0/8, ::1 or a wildcard.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// TCP state number of LISTEN in /proc/net/tcp.
const LISTEN: &str = "0A";

/// The ports listening on the guest's loopback (IPv4 and IPv6 merged), sorted, at most `max`.
/// A table that cannot be read (no IPv6 in the kernel) counts as empty.
pub fn listening_ports(max: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(path) {
            parse(&text, v6, &mut ports);
        }
    }
    ports.into_iter().take(max).collect()
}

/// Add the loopback-reachable listening ports of one /proc/net/tcp{,6} table to `out`.
/// Malformed lines are skipped.
pub fn parse(text: &str, v6: bool, out: &mut BTreeSet<u16>) {
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != LISTEN {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let reachable = if v6 {
            parse_v6(addr).is_some_and(|a| {
                a.is_unspecified()
                    || a.is_loopback()
                    || a.to_ipv4_mapped()
                        .is_some_and(|m| m.is_loopback() || m.is_unspecified())
            })
        } else {
            parse_v4(addr).is_some_and(|a| a.is_unspecified() || a.is_loopback())
        };
        if reachable && port != 0 {
            out.insert(port);
        }
    }
}

/// The kernel prints the address's network-order bytes as one native-endian u32 (`%08X`).
fn parse_v4(hex: &str) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// Four native-endian u32 words, each printed `%08X`.
fn parse_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100000A:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0
   4: 0200007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1005 1 0000000000000000 100 0 0 10 0
   5: garbage
   6: 0100007F:ZZZZ 00000000:0000 0A
   7: 0100007F:0000 00000000:0000 0A
";

    const TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
   3: 000080FE00000000FF005452120034AB:1F94 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2004 1 0000000000000000 100 0 0 10 0
   4: 00000000000000000000000001000000:1F95 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 2005 1 0000000000000000 100 0 0 10 0
   5: 0000000000000000000000000100000:1F96 00000000000000000000000000000000:0000 0A
";

    #[test]
    fn v4_loopback_and_wildcard_listeners_count() {
        let mut got = BTreeSet::new();
        parse(TCP, false, &mut got);
        // 8080 on 127.0.0.1, 80 on 0.0.0.0, 9000 on 127.0.0.2; not 8081 on 10.0.0.1, not the
        // established 8080 connection, not the malformed lines or port 0.
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![80, 8080, 9000]);
    }

    #[test]
    fn v6_loopback_wildcard_and_mapped_listeners_count() {
        let mut got = BTreeSet::new();
        parse(TCP6, true, &mut got);
        // 8082 on ::1, 22 on ::, 8083 on ::ffff:127.0.0.1; not 8084 on fe80::, not the
        // established one, not the short address.
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![22, 8082, 8083]);
    }

    #[test]
    fn addresses_decode() {
        assert_eq!(parse_v4("0100007F"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(parse_v4("0100007"), None);
        assert_eq!(
            parse_v6("00000000000000000000000001000000"),
            Some(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(parse_v6(&format!("{}é", "0".repeat(30))), None);
    }

    #[test]
    fn tables_merge_sorted_without_duplicates() {
        let mut got = BTreeSet::new();
        parse(TCP, false, &mut got);
        parse(TCP, false, &mut got);
        parse(TCP6, true, &mut got);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![22, 80, 8080, 8082, 8083, 9000]
        );
    }
}
