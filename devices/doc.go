// Package devices is the source of identity: the device registry. It
// answers "which device does this credential belong to" for the transports,
// "may this gateway report for that device" and "which labels does it carry"
// for the bridge, and "who is this dashboard viewer" for the live side —
// always from memory, never a query per frame.
//
// Ownership: a Registry owns a Store (SQLite by default, see OpenSQLite)
// and an in-memory copy of everything the hot path needs. Every change is
// written to the Store first, in one transaction, and applied to memory
// second, so memory never shows what is not persisted. Mutations are
// serialized; reads (AuthenticateDevice, Active, MayReportFor, Labels,
// AuthenticateViewer) take a read lock and never block on I/O.
//
// Credentials: tokens are 32 random bytes (crypto/rand), base64url, with a
// recognisable prefix ("tdv_" devices, "tvw_" viewers). A token is returned
// exactly once, by the call that creates it; only its SHA-256 is kept
// (looked up by hash, compared in constant time), plus — computed while the
// plaintext is known — a Mosquitto PBKDF2 hash, so that the broker's password
// file can be written later without the token. Rotation keeps the previous
// token valid for a grace period; revocation and deletion take effect at
// once and are announced to subscribers (Subscribe), which close open
// sockets. Tokens are never logged.
//
// Sharing: OpenPostgres is a SharedStore several instances use at once.
// Each keeps serving from memory; Run follows the store's change feed
// (LISTEN/NOTIFY, a full reload after every reconnection) and applies other
// instances' changes with the same events, so remote revocations close
// local sockets too. While the store is unreachable, writes fail with
// ErrUnavailable and reads go on from memory. A Leader (PGLeader: a
// PostgreSQL advisory lock; Solo alone) picks the one instance that does a
// cluster-wide job such as writing the Mosquitto files. CopyStore moves a
// registry from one store to another.
//
// The admin HTTP API (NewAdminAPI) exposes the registry under /api/v1,
// guarded by the operator token; devices/adminclient is its client.
// WriteMosquittoFiles renders the broker's password and ACL files from the
// registry, and MosquittoSync rewrites them after every device change.
package devices
