//! Pod networking: netns pinning, links/addresses/routes over netlink, IPAM, NAT.
