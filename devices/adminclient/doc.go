// Package adminclient speaks telemetryd's admin API (/api/v1/devices and
// /api/v1/viewers, served by devices.NewAdminAPI) for the operator CLI and
// the load simulator, so that both send the same requests and read answers
// and errors the same way.
//
// Contract: every method takes ctx first and makes one HTTP request (List
// methods one page). A non-2xx answer is an *APIError carrying the API's
// stable error code; an answer over MaxAnswerBytes is ErrAnswerTooLarge,
// never silently truncated. The package imports only the standard library,
// so the simulator does not link the registry's database driver; its wire
// types mirror devices.DeviceJSON and devices.ViewerJSON, which the tests
// check against the real handler.
package adminclient
