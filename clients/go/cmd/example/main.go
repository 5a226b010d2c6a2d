// Command example opens a hot session on hotsvc, sends one turn and prints its events.
//
//	HOTSVC_ADDR=127.0.0.1:50051 go run ./cmd/example "Remember 42"
//
// HOTSVC_TOKEN sends a bearer token; HOTSVC_TLS=1 connects with TLS (system roots).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/hotsvc/hotsvc/clients/go/hotsession"
)

func main() {
	addr := os.Getenv("HOTSVC_ADDR")
	if addr == "" {
		addr = "127.0.0.1:50051"
	}
	prompt := strings.Join(os.Args[1:], " ")
	if prompt == "" {
		prompt = "Say hello"
	}
	var opts []hotsession.Option
	if token := os.Getenv("HOTSVC_TOKEN"); token != "" {
		opts = append(opts, hotsession.WithToken(token))
	}
	if os.Getenv("HOTSVC_TLS") == "1" {
		opts = append(opts, hotsession.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	client, err := hotsession.Connect(addr, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	session, err := client.OpenSession(ctx, hotsession.OpenOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("session %s (pid %d, %s)\n", session.ID(), session.PID(), session.Start())
	turn, err := session.Send(ctx, prompt)
	if err != nil {
		log.Fatal(err)
	}
	for event := range turn.Events(ctx) {
		if delta := event.GetTextDelta(); delta != nil {
			fmt.Print(delta.GetText())
		}
	}
	result, err := turn.Result(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nresult (%s, error=%v): %s\n", result.GetSubtype(), result.GetIsError(), result.GetText())
	// Detach keeps the session hot for a later OpenSession{SessionID: ...}; Close ends it.
	if err := session.Detach(ctx); err != nil {
		log.Fatal(err)
	}
}
