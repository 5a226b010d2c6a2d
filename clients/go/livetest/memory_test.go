// Package livetest drives a live hotsvc through the generated Go stubs.
//
//	HOTSVC_ADDR=127.0.0.1:50051 go test ./livetest
package livetest

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	hotsessionv1 "hotsvc/clients/go/hotsession/v1"
)

func send(t *testing.T, stream hotsessionv1.HotSession_PromptClient, req *hotsessionv1.PromptRequest) {
	t.Helper()
	if err := stream.Send(req); err != nil {
		t.Fatalf("send %v: %v", req, err)
	}
}

// runTurn sends one turn and reads its events up to and including the result.
func runTurn(t *testing.T, stream hotsessionv1.HotSession_PromptClient, sessionID, turnID, text string) *hotsessionv1.TurnResult {
	t.Helper()
	send(t, stream, &hotsessionv1.PromptRequest{Request: &hotsessionv1.PromptRequest_Turn{
		Turn: &hotsessionv1.UserTurn{Text: text, TurnId: turnID}}})
	started := false
	var deltas strings.Builder
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("turn %q: stream ended before its result: %v", text, err)
		}
		if ev.SessionId != sessionID || ev.TurnId != turnID {
			t.Fatalf("turn %q: event for session %q turn %q, want %q %q: %v",
				text, ev.SessionId, ev.TurnId, sessionID, turnID, ev)
		}
		switch e := ev.Event.(type) {
		case *hotsessionv1.PromptResponse_TurnStarted:
			started = true
		case *hotsessionv1.PromptResponse_TextDelta:
			deltas.WriteString(e.TextDelta.Text)
		case *hotsessionv1.PromptResponse_Opened:
			t.Fatalf("turn %q: a second opened event: %v", text, ev)
		case *hotsessionv1.PromptResponse_Result:
			if !started {
				t.Fatalf("turn %q: result before turn_started", text)
			}
			if e.Result.IsError {
				t.Fatalf("turn %q failed: %v", text, e.Result)
			}
			t.Logf("turn %q -> %q (streamed %q)", text, e.Result.Text, deltas.String())
			return e.Result
		}
	}
}

func TestTwoTurnMemory(t *testing.T) {
	addr := os.Getenv("HOTSVC_ADDR")
	if addr == "" {
		t.Fatal("HOTSVC_ADDR is not set: point it at a running `hotsvc serve` (tests/test_clients.py does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	client := hotsessionv1.NewHotSessionClient(conn)

	stream, err := client.Prompt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send(t, stream, &hotsessionv1.PromptRequest{Request: &hotsessionv1.PromptRequest_Open{
		Open: &hotsessionv1.OpenSession{}}})
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("no opened event: %v", err)
	}
	opened := first.GetOpened()
	if opened == nil || opened.SessionId == "" || opened.Pid <= 0 || first.SessionId != opened.SessionId {
		t.Fatalf("first event is not a valid opened: %v", first)
	}
	if opened.Start == hotsessionv1.SessionStart_SESSION_START_UNSPECIFIED {
		t.Fatalf("opened has no start: %v", opened)
	}
	sessionID := opened.SessionId

	if got := runTurn(t, stream, sessionID, "go-1", "Remember 42"); !strings.Contains(got.Text, "OK") {
		t.Fatalf("first turn: got %q, want OK", got.Text)
	}
	if got := runTurn(t, stream, sessionID, "go-2", "What number?"); !strings.Contains(got.Text, "42") {
		t.Fatalf("second turn: got %q, want 42", got.Text)
	}

	// Half-closing ends the RPC with OK once no turn is pending.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if ev, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after half-close: want io.EOF, got event %v, error %v", ev, err)
	}

	status, err := client.PoolStatus(ctx, &hotsessionv1.PoolStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range status.Sessions {
		found = found || s.SessionId == sessionID
	}
	if !found {
		t.Fatalf("PoolStatus does not list session %s: %v", sessionID, status)
	}

	closed, err := client.CloseSession(ctx, &hotsessionv1.CloseSessionRequest{SessionId: sessionID})
	if err != nil {
		t.Fatalf("CloseSession: %v", err)
	}
	if closed.SessionId != sessionID {
		t.Fatalf("CloseSession answered for %q, want %q", closed.SessionId, sessionID)
	}
}
