// Package hotsession is a client for hotsvc's hotsession.v1 API: Claude Code sessions kept
// hot behind gRPC. The generated stubs are in the v1 subpackage; this package wraps them.
//
//	client, err := hotsession.Connect("127.0.0.1:50051")        // WithTLS, WithToken as needed
//	defer client.Close()
//	session, err := client.OpenSession(ctx, hotsession.OpenOptions{})
//	defer session.Close(ctx)
//	text, err := session.Ask(ctx, "Remember 42")                // "OK"
//	turn, err := session.Send(ctx, "What number?")
//	for event := range turn.Events(ctx) { ... }                 // turn_started ... result
//	result, err := turn.Result(ctx)
//
// Every call takes a context; cancelling it ends the wait (and, for OpenSession, the
// session's stream). Refusals are *Error values with the gRPC status and its details.
package hotsession

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/hotsvc/hotsvc/clients/go/hotsession/v1"
)

// MaxResponseBytes is the largest message hotsvc sends (it splits or cuts events to fit).
const MaxResponseBytes = 4 << 20

// SessionHeader is the metadata key carrying the session id on every call that names a
// session: what a load balancer in front of a fleet routes on.
const SessionHeader = "hotsvc-session-id"

type options struct {
	tls      *tls.Config
	token    string
	dialOpts []grpc.DialOption
}

// Option configures Connect.
type Option func(*options)

// WithTLS connects with TLS; nil means the system's roots. For a private CA or mTLS, set
// RootCAs and Certificates in cfg.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = cfg
	}
}

// WithToken sends `authorization: Bearer TOKEN` on every call (a token from `hotsvc
// token`, or a JWT).
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithDialOptions adds grpc.DialOptions (interceptors, keepalive, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Client is a connection to hotsvc; safe for concurrent use.
type Client struct {
	conn *grpc.ClientConn
	rpc  pb.HotSessionClient
}

// Connect makes a client for address (host:port). It does not dial: the connection is
// made on the first call, and calls wait for it while it is being made.
func Connect(address string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes)),
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{o.token}))
	}
	conn, err := grpc.NewClient(address, append(dial, o.dialOpts...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, rpc: pb.NewHotSessionClient(conn)}, nil
}

// Close closes the connection; sessions still open on it end their streams.
func (c *Client) Close() error { return c.conn.Close() }

// RPC is the generated client, for calls the helper does not wrap.
func (c *Client) RPC() pb.HotSessionClient { return c.rpc }

type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity: a token over plaintext only where hotsvc allows it (loopback).
func (b bearer) RequireTransportSecurity() bool { return false }

func forSession(ctx context.Context, sessionID string) context.Context {
	if sessionID == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, SessionHeader, sessionID)
}

// GetSession describes one session: state, owner, turns, model, usage and cost.
func (c *Client) GetSession(ctx context.Context, sessionID string) (*pb.Session, error) {
	s, err := c.rpc.GetSession(forSession(ctx, sessionID), &pb.GetSessionRequest{SessionId: sessionID})
	return s, fromRPC(err)
}

// ListSessions returns every session the caller may see, newest first, all pages;
// filter is e.g. `state = STOPPED AND profile = "review"` ("" for all).
func (c *Client) ListSessions(ctx context.Context, filter string) ([]*pb.Session, error) {
	var all []*pb.Session
	token := ""
	for {
		page, err := c.rpc.ListSessions(ctx, &pb.ListSessionsRequest{Filter: filter, PageToken: token})
		if err != nil {
			return all, fromRPC(err)
		}
		all = append(all, page.GetSessions()...)
		if token = page.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

// GetSessionMessages reads the whole conversation back, oldest first.
func (c *Client) GetSessionMessages(ctx context.Context, sessionID string) ([]*pb.SessionMessage, error) {
	var all []*pb.SessionMessage
	token := ""
	for {
		page, err := c.rpc.GetSessionMessages(forSession(ctx, sessionID),
			&pb.GetSessionMessagesRequest{SessionId: sessionID, PageToken: token})
		if err != nil {
			return all, fromRPC(err)
		}
		all = append(all, page.GetMessages()...)
		if token = page.GetNextPageToken(); token == "" {
			return all, nil
		}
	}
}

// ForkSession makes a new session (the caller's) holding a copy of the conversation.
func (c *Client) ForkSession(ctx context.Context, sessionID string) (*pb.Session, error) {
	s, err := c.rpc.ForkSession(forSession(ctx, sessionID), &pb.ForkSessionRequest{SessionId: sessionID})
	return s, fromRPC(err)
}

// CloseSession ends a session's process and keeps the conversation (a later open
// resumes it).
func (c *Client) CloseSession(ctx context.Context, sessionID string) (*pb.CloseSessionResponse, error) {
	r, err := c.rpc.CloseSession(forSession(ctx, sessionID), &pb.CloseSessionRequest{SessionId: sessionID})
	return r, fromRPC(err)
}

// DeleteSession removes a session, its process, conversation and workspace.
func (c *Client) DeleteSession(ctx context.Context, sessionID string) error {
	_, err := c.rpc.DeleteSession(forSession(ctx, sessionID), &pb.DeleteSessionRequest{SessionId: sessionID})
	return fromRPC(err)
}

// PoolStatus reports the warm pools and the caller's live sessions.
func (c *Client) PoolStatus(ctx context.Context) (*pb.PoolStatusResponse, error) {
	r, err := c.rpc.PoolStatus(ctx, &pb.PoolStatusRequest{})
	return r, fromRPC(err)
}

// OpenOptions says which session OpenSession opens.
type OpenOptions struct {
	// SessionID re-attaches to that session (resuming it if stopped). Empty opens a new
	// one under a fresh id chosen here and sent as routing metadata, so a load balancer
	// routes its first request as every later one; it still takes a warm process.
	SessionID string
	// CreateIfMissing creates SessionID when it does not exist.
	CreateIfMissing bool
	// Profile names a profile of the service's config; empty is the default.
	Profile string
	// Options for a new session, as the profile's caller_may_set allows.
	Options *pb.SessionOptions
	// IncludeRawJSON asks for each event's original stream-json line.
	IncludeRawJSON bool
	// OnPermission answers Claude Code's permission requests (a profile with
	// permission_prompts = "caller"). Without it, requests are left to the caller, who
	// sees them among a turn's events and answers with Session.Decide.
	OnPermission PermissionFunc
}

// PermissionFunc decides a permission request; it runs on its own goroutine.
type PermissionFunc func(ctx context.Context, request *pb.PermissionRequest) Decision

// OpenSession opens a session and returns once hotsvc confirmed it (the `opened`
// event). ctx bounds the session's stream: cancel it (or Close the session) to end it.
func (c *Client) OpenSession(ctx context.Context, o OpenOptions) (*Session, error) {
	if o.SessionID == "" {
		id, err := newSessionID()
		if err != nil {
			return nil, err
		}
		o.SessionID, o.CreateIfMissing = id, true
	}
	streamCtx, cancel := context.WithCancel(forSession(ctx, o.SessionID))
	stream, err := c.rpc.Prompt(streamCtx)
	if err != nil {
		cancel()
		return nil, fromRPC(err)
	}
	open := &pb.OpenSession{
		SessionId:       o.SessionID,
		Profile:         o.Profile,
		IncludeRawJson:  o.IncludeRawJSON,
		CreateIfMissing: o.CreateIfMissing,
		Options:         o.Options,
	}
	if err := stream.Send(&pb.PromptRequest{Request: &pb.PromptRequest_Open{Open: open}}); err != nil {
		_, recvErr := stream.Recv() // the status says why the send failed
		cancel()
		return nil, fromRPC(recvErr)
	}
	for {
		event, err := stream.Recv()
		if err != nil {
			cancel()
			return nil, fromRPC(err)
		}
		if opened := event.GetOpened(); opened != nil {
			return newSession(c, stream, cancel, streamCtx, opened, o.OnPermission), nil
		}
		// Progress "queued" events while the open waits for room: keep waiting.
	}
}

// newSessionID is a random (version 4) UUID, as hotsvc's session ids are.
func newSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("hotsession: no randomness for a session id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
