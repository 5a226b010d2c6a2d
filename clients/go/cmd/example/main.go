// Command example opens a hot session on hotsvc, sends one turn and prints its events.
//
//	HOTSVC_ADDR=127.0.0.1:50051 go run ./cmd/example "Remember 42"
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"

	hotsessionv1 "hotsvc/clients/go/hotsession/v1"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	client := hotsessionv1.NewHotSessionClient(conn)

	stream, err := client.Prompt(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// The first request opens a new session (or re-attaches, given a session id).
	open := &hotsessionv1.PromptRequest{Request: &hotsessionv1.PromptRequest_Open{
		Open: &hotsessionv1.OpenSession{}}}
	turn := &hotsessionv1.PromptRequest{Request: &hotsessionv1.PromptRequest_Turn{
		Turn: &hotsessionv1.UserTurn{Text: prompt}}}
	for _, req := range []*hotsessionv1.PromptRequest{open, turn} {
		if err := stream.Send(req); err != nil {
			log.Fatal(err)
		}
	}
	// Half-close: the turn already sent runs to its result, then the RPC ends with OK.
	if err := stream.CloseSend(); err != nil {
		log.Fatal(err)
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		switch e := ev.Event.(type) {
		case *hotsessionv1.PromptResponse_Opened:
			fmt.Printf("session %s (pid %d, %s)\n", e.Opened.SessionId, e.Opened.Pid, e.Opened.Start)
		case *hotsessionv1.PromptResponse_TextDelta:
			fmt.Print(e.TextDelta.Text)
		case *hotsessionv1.PromptResponse_Result:
			fmt.Printf("\nresult (%s, error=%v): %s\n", e.Result.Subtype, e.Result.IsError, e.Result.Text)
		}
	}
}
