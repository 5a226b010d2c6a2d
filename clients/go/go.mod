module github.com/hotsvc/hotsvc/clients/go

// The minimum versions (MVS) this module needs: grpc-go 1.63+ for grpc.NewClient. The
// offline build (tests/test_clients.py) compiles against Debian's sources of the same
// modules, see tools/hotsvc_tools/godeps.py.
go 1.21

require (
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240318140521-94a12d6c2237
	google.golang.org/grpc v1.64.0
	google.golang.org/protobuf v1.33.0
)

require (
	golang.org/x/net v0.22.0 // indirect
	golang.org/x/sys v0.23.0 // indirect
	golang.org/x/text v0.17.0 // indirect
)
