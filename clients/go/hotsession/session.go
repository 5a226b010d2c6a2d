package hotsession

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/hotsvc/hotsvc/clients/go/hotsession/v1"
)

// Decision answers a permission request.
type Decision struct {
	Allow bool
	// Message is shown to Claude when denying.
	Message string
	// UpdatedInput runs the tool with this input instead of the requested one.
	UpdatedInput *structpb.Struct
	// Interrupt denies and stops the turn.
	Interrupt bool
	// ApplySuggestions are indexes into the request's suggestions to apply with an allow.
	ApplySuggestions []uint32
}

// Allow lets the tool run as requested.
func Allow() Decision { return Decision{Allow: true} }

// Deny refuses the tool; Claude is told message.
func Deny(message string) Decision { return Decision{Message: message} }

// Session is a hot session attached through one Prompt stream. One goroutine reads the
// stream and hands each event to the turn it belongs to; methods are safe for
// concurrent use.
type Session struct {
	client   *Client
	stream   pb.HotSession_PromptClient
	cancel   context.CancelFunc
	ctx      context.Context
	opened   *pb.SessionOpened
	permit   PermissionFunc
	sendMu   sync.Mutex
	mu       sync.Mutex
	turns    map[string]*Turn
	ids      atomic.Uint64
	finished chan struct{} // closed when the reader ends
	err      error         // why the stream ended, once finished (nil: ended OK)
	closed   atomic.Bool
	halfDone bool
}

func newSession(c *Client, stream pb.HotSession_PromptClient, cancel context.CancelFunc,
	ctx context.Context, opened *pb.SessionOpened, permit PermissionFunc) *Session {
	s := &Session{
		client:   c,
		stream:   stream,
		cancel:   cancel,
		ctx:      ctx,
		opened:   opened,
		permit:   permit,
		turns:    map[string]*Turn{},
		finished: make(chan struct{}),
	}
	go s.read()
	return s
}

// ID is the session's id (Claude Code's own session id).
func (s *Session) ID() string { return s.opened.GetSessionId() }

// Start tells where the process came from: WARM (the pool), COLD, ATTACHED or RESUMED.
func (s *Session) Start() pb.SessionStart { return s.opened.GetStart() }

// PID is the Claude Code process's pid.
func (s *Session) PID() int32 { return s.opened.GetPid() }

// Opened is the `opened` event as hotsvc sent it.
func (s *Session) Opened() *pb.SessionOpened { return s.opened }

func (s *Session) send(req *pb.PromptRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.halfDone || s.closed.Load() {
		return ErrSessionClosed
	}
	select {
	case <-s.finished:
		if s.err != nil {
			return s.err
		}
		return ErrSessionClosed
	default:
	}
	if err := s.stream.Send(req); err != nil {
		if errors.Is(err, io.EOF) { // the stream ended; the reader has its status
			<-s.finished
			if s.err != nil {
				return s.err
			}
			return ErrSessionClosed
		}
		return fromRPC(err)
	}
	return nil
}

// TurnOption adds to a turn: content blocks, a turn id.
type TurnOption func(*pb.UserTurn)

// WithContent appends content blocks (images, documents, text) after the turn's text.
func WithContent(blocks ...*pb.ContentBlock) TurnOption {
	return func(t *pb.UserTurn) { t.Content = append(t.Content, blocks...) }
}

// WithTurnID sets the turn's id (otherwise the helper makes one).
func WithTurnID(id string) TurnOption { return func(t *pb.UserTurn) { t.TurnId = id } }

// Send writes a user turn; turns run in order, one at a time. Read its events with
// Turn.Events, its end with Turn.Result.
func (s *Session) Send(ctx context.Context, text string, opts ...TurnOption) (*Turn, error) {
	user := &pb.UserTurn{Text: text}
	for _, opt := range opts {
		opt(user)
	}
	if user.TurnId == "" {
		user.TurnId = fmt.Sprintf("go-%d", s.ids.Add(1))
	}
	turn := newTurn(user.TurnId)
	s.mu.Lock()
	if _, busy := s.turns[user.TurnId]; busy {
		s.mu.Unlock()
		return nil, fmt.Errorf("hotsession: turn id %q is already pending", user.TurnId)
	}
	s.turns[user.TurnId] = turn // before sending: the first event may come at once
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		s.forget(turn)
		return nil, err
	}
	if err := s.send(&pb.PromptRequest{Request: &pb.PromptRequest_Turn{Turn: user}}); err != nil {
		s.forget(turn)
		return nil, err
	}
	return turn, nil
}

// Ask sends a turn and returns its final text (a *TurnFailedError if it failed).
func (s *Session) Ask(ctx context.Context, text string, opts ...TurnOption) (string, error) {
	turn, err := s.Send(ctx, text, opts...)
	if err != nil {
		return "", err
	}
	return turn.Text(ctx)
}

// Interrupt stops the most recently sent turn if it has not finished; its result then
// has is_error. The session stays.
func (s *Session) Interrupt(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.send(&pb.PromptRequest{Request: &pb.PromptRequest_Interrupt{Interrupt: &pb.Interrupt{}}})
}

// Decide answers the permission request requestID (for callers without OnPermission).
func (s *Session) Decide(ctx context.Context, requestID string, d Decision) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.send(&pb.PromptRequest{Request: &pb.PromptRequest_PermissionDecision{
		PermissionDecision: &pb.PermissionDecision{
			RequestId:        requestID,
			Allow:            d.Allow,
			UpdatedInput:     d.UpdatedInput,
			Message:          d.Message,
			Interrupt:        d.Interrupt,
			ApplySuggestions: d.ApplySuggestions,
		}}})
}

// Detach half-closes the stream: turns already sent run to their results, the RPC ends
// and the session stays hot for a later OpenSession by id.
func (s *Session) Detach(ctx context.Context) error {
	s.sendMu.Lock()
	if !s.halfDone {
		s.halfDone = true
		_ = s.stream.CloseSend() // an error here shows as the reader's
	}
	s.sendMu.Unlock()
	select {
	case <-s.finished:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the session and its process (CloseSession; the conversation is kept and a
// later OpenSession by id resumes it), then the stream.
func (s *Session) Close(ctx context.Context) (*pb.CloseSessionResponse, error) {
	s.closed.Store(true)
	defer s.drop()
	return s.client.CloseSession(ctx, s.ID())
}

// Delete removes the session for good (DeleteSession), then the stream.
func (s *Session) Delete(ctx context.Context) error {
	s.closed.Store(true)
	defer s.drop()
	return s.client.DeleteSession(ctx, s.ID())
}

func (s *Session) drop() {
	s.cancel()
	<-s.finished
}

func (s *Session) forget(t *Turn) {
	s.mu.Lock()
	delete(s.turns, t.ID)
	s.mu.Unlock()
}

func (s *Session) read() {
	var failure error
	defer func() {
		if failure == nil {
			failure = ErrSessionClosed
		}
		s.mu.Lock()
		pending := s.turns
		s.turns = map[string]*Turn{}
		s.mu.Unlock()
		for _, t := range pending {
			t.fail(failure)
		}
		close(s.finished)
	}()
	for {
		event, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			return // ended OK after a half-close
		}
		if err != nil {
			if !s.closed.Load() {
				failure = fromRPC(err)
				s.err = failure
			}
			return
		}
		if req := event.GetPermissionRequest(); req != nil && s.permit != nil {
			go s.answer(req)
		}
		if se := event.GetError(); se != nil && event.GetTurnId() == "" {
			continue // a refusal that is no turn's (e.g. a stale decision)
		}
		s.mu.Lock()
		turn := s.turns[event.GetTurnId()]
		s.mu.Unlock()
		if turn == nil {
			continue // heartbeat, go_away, or a turn's event after its result
		}
		if turn.deliver(event) {
			s.forget(turn)
		}
	}
}

func (s *Session) answer(req *pb.PermissionRequest) {
	d := s.permit(s.ctx, req)
	// A failed send means the stream is gone; the turn's waiters hear why from the reader.
	_ = s.Decide(s.ctx, req.GetRequestId(), d)
}
