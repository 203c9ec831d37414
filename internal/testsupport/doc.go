// Package testsupport holds what several packages' tests share: finding
// the real server binaries the integration tests start, under one CI rule,
// and waiting until a condition holds.
//
// The CI rule: when a binary is missing the test is skipped, except under
// CI=true, where it fails — a CI run that silently skipped its integration
// tests would pass without testing anything.
//
// It imports only the standard library and is imported only by tests.
package testsupport
