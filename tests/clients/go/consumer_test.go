// A project outside the repository using the Go module (a replace to the checkout), as a
// user would. Run by tests/test_clients.py: HOTSVC_ADDR (TLS), HOTSVC_CA, HOTSVC_TOKEN;
// TestPermissionCallback drives a permission request answered by a callback.
package consumer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hotsvc/hotsvc/clients/go/hotsession"
	pb "github.com/hotsvc/hotsvc/clients/go/hotsession/v1"
)

func connect(t *testing.T) *hotsession.Client {
	t.Helper()
	ca, err := os.ReadFile(os.Getenv("HOTSVC_CA"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client, err := hotsession.Connect(os.Getenv("HOTSVC_ADDR"),
		hotsession.WithTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}),
		hotsession.WithToken(os.Getenv("HOTSVC_TOKEN")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestMemoryInterruptReattach(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := connect(t)
	session, err := client.OpenSession(ctx, hotsession.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := session.Start(); s != pb.SessionStart_SESSION_START_WARM && s != pb.SessionStart_SESSION_START_COLD {
		t.Fatalf("start %v", s)
	}
	if text, err := session.Ask(ctx, "Remember 42"); err != nil || text != "OK" {
		t.Fatalf("Remember 42: %q, %v", text, err)
	}
	turn, err := session.Send(ctx, "What number?")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for event := range turn.Events(ctx) {
		kinds = append(kinds, eventKind(event))
	}
	if len(kinds) < 2 || kinds[0] != "turn_started" || kinds[len(kinds)-1] != "result" {
		t.Fatalf("events: %v", kinds)
	}
	if text, err := turn.Text(ctx); err != nil || text != "42" {
		t.Fatalf("What number?: %q, %v", text, err)
	}

	slow, err := session.Send(ctx, "tell me something slow")
	if err != nil {
		t.Fatal(err)
	}
	for event := range slow.Events(ctx) {
		if event.GetTextDelta() != nil {
			if err := session.Interrupt(ctx); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	result, err := slow.Result(ctx)
	if err != nil || !result.GetIsError() {
		t.Fatalf("interrupted turn: %v, %v", result, err)
	}
	var failed *hotsession.TurnFailedError
	if _, err := slow.Text(ctx); !errors.As(err, &failed) {
		t.Fatalf("Text of an interrupted turn: %v", err)
	}
	if text, err := session.Ask(ctx, "What number?"); err != nil || text != "42" {
		t.Fatalf("after the interrupt: %q, %v", text, err)
	}

	listed, err := client.ListSessions(ctx, "")
	if err != nil || !containsSession(listed, session.ID()) {
		t.Fatalf("ListSessions: %v, %v", listed, err)
	}
	if err := session.Detach(ctx); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	again, err := client.OpenSession(ctx, hotsession.OpenOptions{SessionID: session.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if again.Start() != pb.SessionStart_SESSION_START_ATTACHED {
		t.Fatalf("re-attach start %v", again.Start())
	}
	if text, err := again.Ask(ctx, "What number?"); err != nil || text != "42" {
		t.Fatalf("re-attached: %q, %v", text, err)
	}
	if _, err := again.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetSession(ctx, session.ID())
	if err != nil || got.GetState() != pb.SessionState_SESSION_STATE_STOPPED {
		t.Fatalf("after Close: %v, %v", got, err)
	}
}

func TestTypedError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := connect(t).OpenSession(ctx, hotsession.OpenOptions{Profile: "no-such-profile"})
	var refused *hotsession.Error
	if !errors.As(err, &refused) {
		t.Fatalf("want *hotsession.Error, got %v", err)
	}
	if refused.Code != codes.NotFound || refused.Reason != "PROFILE_NOT_FOUND" || refused.Metadata["knownProfiles"] == "" {
		t.Fatalf("refusal: %+v", refused)
	}
}

// TestPermissionCallback needs a service that relays permission prompts (profile
// "caller"); tests/test_clients.py runs it where hotsvc does.
func TestPermissionCallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	asked := make(chan string, 4)
	session, err := connect(t).OpenSession(ctx, hotsession.OpenOptions{
		Profile: "caller",
		OnPermission: func(_ context.Context, req *pb.PermissionRequest) hotsession.Decision {
			asked <- req.GetToolName()
			return hotsession.Allow()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(ctx)
	text, err := session.Ask(ctx, "write file from-go.txt")
	if err != nil || !strings.Contains(text, "Write tool said") {
		t.Fatalf("allowed Write: %q, %v", text, err)
	}
	if tool := <-asked; tool != "Write" {
		t.Fatalf("asked about %q", tool)
	}
}

func eventKind(e *pb.PromptResponse) string {
	switch e.GetEvent().(type) {
	case *pb.PromptResponse_TurnStarted:
		return "turn_started"
	case *pb.PromptResponse_TextDelta:
		return "text_delta"
	case *pb.PromptResponse_Result:
		return "result"
	default:
		return "other"
	}
}

func containsSession(sessions []*pb.Session, id string) bool {
	for _, s := range sessions {
		if s.GetSessionId() == id {
			return true
		}
	}
	return false
}
