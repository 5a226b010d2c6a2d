package hotsession

import (
	"context"
	"sync"

	pb "github.com/hotsvc/hotsvc/clients/go/hotsession/v1"
)

// Turn is one user turn: its events as they arrive, and its result.
type Turn struct {
	ID string

	mu     sync.Mutex
	events []*pb.PromptResponse
	more   chan struct{} // closed and replaced on every new event
	done   chan struct{} // closed once the result (or a failure) is in
	result *pb.TurnResult
	err    error
}

func newTurn(id string) *Turn {
	return &Turn{ID: id, more: make(chan struct{}), done: make(chan struct{})}
}

// deliver records an event; it reports whether the turn has ended.
func (t *Turn) deliver(event *pb.PromptResponse) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.done:
		return true
	default:
	}
	t.events = append(t.events, event)
	ended := false
	if r := event.GetResult(); r != nil {
		t.result, ended = r, true
	} else if se := event.GetError(); se != nil { // refused (e.g. past the pending limit)
		t.err, ended = streamError(se), true
	}
	close(t.more)
	t.more = make(chan struct{})
	if ended {
		close(t.done)
	}
	return ended
}

func (t *Turn) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.done:
		return
	default:
	}
	t.err = err
	close(t.more)
	t.more = make(chan struct{})
	close(t.done)
}

// Events streams the turn's events from the first, up to and including its result; the
// channel closes after the result, when the turn fails (see Result for why), or when
// ctx ends. Each call starts again from the first event.
func (t *Turn) Events(ctx context.Context) <-chan *pb.PromptResponse {
	out := make(chan *pb.PromptResponse)
	go func() {
		defer close(out)
		for seen := 0; ; {
			t.mu.Lock()
			pending := t.events[seen:]
			more, done := t.more, t.done
			t.mu.Unlock()
			for _, event := range pending {
				select {
				case out <- event:
					seen++
				case <-ctx.Done():
					return
				}
			}
			if len(pending) == 0 {
				select {
				case <-done:
					t.mu.Lock()
					rest := len(t.events) - seen
					t.mu.Unlock()
					if rest == 0 {
						return
					}
				case <-more:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// Result waits for the turn's TurnResult (errors included: check IsError); err is set
// when the stream ended first or the turn was refused.
func (t *Turn) Result(ctx context.Context) (*pb.TurnResult, error) {
	select {
	case <-t.done:
		return t.result, t.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Text waits for the turn's final text; a *TurnFailedError when the result is an error.
func (t *Turn) Text(ctx context.Context) (string, error) {
	result, err := t.Result(ctx)
	if err != nil {
		return "", err
	}
	if result.GetIsError() {
		return "", &TurnFailedError{Result: result}
	}
	return result.GetText(), nil
}
