//! Whether a Host header names this machine's loopback: the guard's test against DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// localhost, *.localhost, 127.0.0.0/8 or ::1, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let Some((address, port)) = rest.split_once(']') else { return false };
        let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(is_port);
        return port_ok && address.parse::<Ipv6Addr>().is_ok_and(|ip| IpAddr::V6(ip).to_canonical().is_loopback());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_are_loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8080",
            "LocalHost.:1",
            "api.localhost:80",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.255.0.9:65535",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_not_loopback_hosts() {
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "[::]:8080",
            "[::1",
            "[::1]x",
            "localhost:80a",
            "localhost:",
            "127.1:8080",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
