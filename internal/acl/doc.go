// Package acl holds access lists: the "ca" keys of west's configuration.
//
// An entry is an IP address ("127.0.0.1", "::1"), a CIDR range
// ("10.0.0.0/8", "fd00::/8"), or, where the caller allows it, a peer name
// (any other non-empty string, matched exactly). A list answers two
// separate questions, whether an address is allowed and whether a name is
// allowed, and each is open when the list has no rule of that kind: an
// empty list allows everything, and a list of names alone allows every
// address. An entry that looks like an address (digits and dots, or hex
// digits and colons) but does not parse is an error, never a name.
//
// IPv4 addresses written or arriving in their IPv4-mapped IPv6 form
// ("::ffff:10.0.0.1") are unmapped first, so that an IPv4 rule matches a
// client reaching a dual-stack socket. Zones are ignored when matching.
//
// Parse errors are *EntryError, naming the entry's index so that
// internal/config can point at it. The package is pure (no I/O), imports
// only the standard library, and a parsed List is safe for concurrent use.
package acl
