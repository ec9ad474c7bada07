// Package xds serves envoyproxy/ratelimit's configuration, the
// RateLimitConfig resources of type
// type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig, over
// aggregated xDS in state-of-the-world mode (ratelimit's CONFIG_TYPE
// GRPC_XDS_SOTW), and tracks which configuration each connected ratelimit
// instance accepted or rejected.
//
// # What is served
//
// Every instance gets the same configuration whatever its node ID
// (CONFIG_GRPC_XDS_NODE_ID): the snapshot cache hashes every node to one key,
// while the stream callbacks track each stream as its own instance. Publish
// replaces the configuration; it refuses one whose response would exceed the
// size instances accept (MaxMessageBytes, ratelimit's
// XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES, gRPC's 4 MiB by default), and the previous
// one stays served.
//
// A ratelimit instance that rejects (NACKs) a configuration keeps enforcing
// the one it had. While a connected instance rejects the published version,
// the server serves the last version published before it that nobody was
// rejecting, so that an instance starting meanwhile runs what its peers run
// rather than rejecting the new one and running nothing; once the rejecting
// instances have gone, the published version is served again. Rollout and
// Status report the rejection and ratelimit's message.
//
// # Who serves
//
// Every manager replica serves (NeedLeaderElection is false), and a ratelimit
// instance talks to whichever replica its connection reaches. That is safe
// because each replica renders its snapshot from the same objects through the
// same deterministic renderer, so replicas serve the same configuration, at
// worst one watch event apart; and because ratelimit keeps enforcing its last
// configuration when its xDS server goes away, reconnects with backoff, and
// receives the full state again on its new stream. Each replica's tracking
// covers the instances connected to it.
//
// # Versions
//
// A version is "<seq>-<hash>" (FormatVersion, NewVersion): seq is a decimal
// sequence number, starting at 1, that orders one replica's publications, and
// hash names the content. Publish requires each seq to be greater than the
// last. CompareVersions and Rollout order versions by seq alone, which is why
// "has every instance accepted v or a later version" can be answered. seq is
// local to a replica: versions of different replicas compare only by hash.
// An instance that reconnects therefore proves its version by acknowledging
// a response sent on its new stream; versions it reports from an earlier
// stream are not counted.
package xds
