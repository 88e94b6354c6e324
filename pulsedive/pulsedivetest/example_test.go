package pulsedivetest_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// A test starts a fake, makes one value fail twice with 503 and then
// recover, and reads what the fake saw.
func ExampleNewServer() {
	srv, err := pulsedivetest.NewServer(pulsedivetest.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	srv.SetFault("parkingcrew.net", pulsedivetest.Fault{Status: http.StatusServiceUnavailable, FirstN: 2})

	for range 3 {
		resp, err := srv.Client().Get(srv.URL() + "info.php?indicator=parkingcrew.net&key=k")
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	fmt.Println(srv.CallsFor(pulsedivetest.KindInfo, "parkingcrew.net"), "calls,", srv.CallsByKey("k"), "with key k")
	// Output:
	// 503
	// 503
	// 200
	// 3 calls, 3 with key k
}
