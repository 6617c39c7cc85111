//! `--trusted-proxies`: the peers whose `X-Real-IP` header a node believes. A client's
//! address decides its sign-in, sign-up and hashing-queue buckets, so a header believed
//! from anyone would let every client pick a fresh address per request.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The default: a proxy on the node's own machine (parley-sim's nginx), nothing else.
pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1/32,::1/128";

/// One trusted address (`10.0.0.5`) or network (`10.0.0.0/24`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNetwork {
    network_address: IpAddr,
    prefix_length: u8,
}

/// A `--trusted-proxies` entry that is not an address or a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyNetworkError {
    /// Neither an IP address nor `address/prefix`; holds the entry.
    #[error("{0:?} is not an address or a network (e.g. 10.0.0.5, 10.0.0.0/24, ::1/128)")]
    NotAnAddress(String),
    /// The prefix is longer than the address has bits (`10.0.0.0/33`).
    #[error("{given:?}: a /{prefix_length} prefix is longer than the address ({address_bits} bits)")]
    PrefixTooLong {
        /// The entry as written.
        given: String,
        /// The prefix length written.
        prefix_length: u8,
        /// Bits of the address: 32 (IPv4) or 128 (IPv6).
        address_bits: u8,
    },
    // Refused rather than masked: `10.0.0.5/24` may mean one host or the whole network,
    // and guessing wrong trusts too much or too little.
    /// The address has bits set past its prefix (`10.0.0.5/24`): ambiguous, so refused.
    #[error(
        "{given:?} has bits set past its prefix; the network is {network}, a single host is written without a prefix"
    )]
    HostBitsSet {
        /// The entry as written.
        given: String,
        /// The network the prefix names (`10.0.0.0/24`).
        network: String,
    },
}

fn address_bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address's bits, left-aligned in a u128 so both families mask the same way.
fn left_aligned_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn prefix_mask(prefix_length: u8) -> u128 {
    match prefix_length {
        0 => 0,
        length => u128::MAX << (128 - u32::from(length)),
    }
}

impl ProxyNetwork {
    /// Whether `address` lies in this network (an IPv4 network never holds an IPv6
    /// address: callers canonicalise IPv4-mapped peers first).
    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.network_address.is_ipv4()
            && (left_aligned_bits(address) ^ left_aligned_bits(self.network_address)) & prefix_mask(self.prefix_length)
                == 0
    }
}

impl FromStr for ProxyNetwork {
    type Err = ProxyNetworkError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        let trimmed = given.trim();
        let not_an_address = || ProxyNetworkError::NotAnAddress(given.to_owned());
        let (address_text, prefix_text) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let address: IpAddr = address_text.parse().map_err(|_| not_an_address())?;
        let address_bits = address_bits(address);
        let prefix_length = match prefix_text {
            None => address_bits,
            Some(prefix) if !prefix.is_empty() && prefix.bytes().all(|byte| byte.is_ascii_digit()) => {
                prefix.parse::<u8>().map_err(|_| not_an_address())?
            }
            Some(_) => return Err(not_an_address()),
        };
        if prefix_length > address_bits {
            return Err(ProxyNetworkError::PrefixTooLong {
                given: given.to_owned(),
                prefix_length,
                address_bits,
            });
        }
        let network = ProxyNetwork {
            network_address: address,
            prefix_length,
        };
        if left_aligned_bits(address) & !prefix_mask(prefix_length) != 0 {
            let network_bits = left_aligned_bits(address) & prefix_mask(prefix_length);
            let network_address = match address {
                IpAddr::V4(_) => IpAddr::from(((network_bits >> 96) as u32).to_be_bytes()),
                IpAddr::V6(_) => IpAddr::from(network_bits.to_be_bytes()),
            };
            return Err(ProxyNetworkError::HostBitsSet {
                given: given.to_owned(),
                network: format!("{network_address}/{prefix_length}"),
            });
        }
        Ok(network)
    }
}

impl fmt::Display for ProxyNetwork {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network_address, self.prefix_length)
    }
}

/// The proxies whose `X-Real-IP` is believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<ProxyNetwork>,
}

impl TrustedProxies {
    /// Trusts connections from any of `networks`.
    pub fn new(networks: Vec<ProxyNetwork>) -> TrustedProxies {
        TrustedProxies { networks }
    }

    /// Whether a connection from `peer` comes from a trusted proxy. An IPv4 peer of a
    /// dual-stack listener shows as `::ffff:a.b.c.d`; it is the IPv4 address that the
    /// operator wrote down.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.networks.iter().any(|network| network.contains(peer))
    }
}

impl Default for TrustedProxies {
    fn default() -> TrustedProxies {
        TrustedProxies::new(
            DEFAULT_TRUSTED_PROXIES
                .split(',')
                .map(|network| network.parse().expect("the default trusted proxies parse"))
                .collect(),
        )
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let networks: Vec<String> = self.networks.iter().map(ToString::to_string).collect();
        formatter.write_str(&networks.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> ProxyNetwork {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn address(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_and_networks_of_both_families_parse() {
        assert_eq!(network("10.0.0.5").to_string(), "10.0.0.5/32");
        assert_eq!(network(" 10.0.0.0/24 ").to_string(), "10.0.0.0/24");
        assert_eq!(network("::1").to_string(), "::1/128");
        assert_eq!(network("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(network("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn nonsense_long_prefixes_and_host_bits_are_refused_with_the_reason() {
        for nonsense in [
            "",
            "nginx",
            "10.0.0/24",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "10.0.0.0/24/1",
        ] {
            assert!(
                matches!(
                    nonsense.parse::<ProxyNetwork>(),
                    Err(ProxyNetworkError::NotAnAddress(_))
                ),
                "{nonsense:?}"
            );
        }
        assert!(matches!(
            "10.0.0.0/33".parse::<ProxyNetwork>(),
            Err(ProxyNetworkError::PrefixTooLong { .. })
        ));
        assert!(matches!(
            "::/129".parse::<ProxyNetwork>(),
            Err(ProxyNetworkError::PrefixTooLong { .. })
        ));
        let error = "10.0.0.5/24".parse::<ProxyNetwork>().unwrap_err();
        assert!(error.to_string().contains("the network is 10.0.0.0/24"), "{error}");
        let error = "fd00::1/8".parse::<ProxyNetwork>().unwrap_err();
        assert!(error.to_string().contains("the network is fd00::/8"), "{error}");
    }

    #[test]
    fn a_network_holds_its_addresses_and_no_others() {
        let subnet = network("172.16.200.0/24");
        assert!(subnet.contains(address("172.16.200.0")));
        assert!(subnet.contains(address("172.16.200.255")));
        assert!(!subnet.contains(address("172.16.201.1")));
        assert!(
            !subnet.contains(address("::ffff:172.16.200.1")),
            "canonicalised by the caller"
        );
        let host = network("172.16.200.10");
        assert!(host.contains(address("172.16.200.10")));
        assert!(!host.contains(address("172.16.200.11")));
        assert!(network("0.0.0.0/0").contains(address("203.0.113.9")));
        assert!(!network("0.0.0.0/0").contains(address("::1")));
        let v6 = network("fd00::/8");
        assert!(v6.contains(address("fd12:3456::1")));
        assert!(!v6.contains(address("fe80::1")));
    }

    #[test]
    fn the_default_trusts_loopback_only_also_when_mapped_into_ipv6() {
        let trusted = TrustedProxies::default();
        assert_eq!(trusted.to_string(), DEFAULT_TRUSTED_PROXIES);
        assert!(trusted.contains(address("127.0.0.1")));
        assert!(trusted.contains(address("::1")));
        assert!(trusted.contains(address("::ffff:127.0.0.1")));
        // 127.0.0.2 is loopback too, but the default names one address: tests start
        // clients on 127.0.0.2 and later, and they are clients, not proxies.
        assert!(!trusted.contains(address("127.0.0.2")));
        for outsider in ["10.0.0.1", "172.16.0.1", "192.168.1.1", "203.0.113.9", "fd00::1"] {
            assert!(!trusted.contains(address(outsider)), "{outsider}");
        }
        let nginx = TrustedProxies::new(vec![network("172.16.200.10")]);
        assert!(nginx.contains(address("::ffff:172.16.200.10")));
        assert!(!nginx.contains(address("127.0.0.1")));
    }
}
