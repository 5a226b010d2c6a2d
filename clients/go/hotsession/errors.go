package hotsession

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/hotsvc/hotsvc/clients/go/hotsession/v1"
)

// Error is a call hotsvc refused: the gRPC status and the google.rpc details it carries.
// Get it with errors.As; status.FromError works on it too.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is google.rpc.ErrorInfo's stable UPPER_SNAKE name (e.g. "SESSION_NOT_FOUND");
	// Metadata holds the figures the message quotes (sessionId, maxSessions, ...).
	Reason   string
	Metadata map[string]string
	// RetryDelay is google.rpc.RetryInfo's delay, where a retry can succeed (0 otherwise).
	RetryDelay time.Duration
	// FieldViolations: google.rpc.BadRequest for INVALID_ARGUMENT (which field, and why).
	FieldViolations []*errdetails.BadRequest_FieldViolation
	// QuotaViolations: google.rpc.QuotaFailure for a caller past its quota.
	QuotaViolations []*errdetails.QuotaFailure_Violation

	status *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("hotsvc: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("hotsvc: %s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Retryable reports whether waiting RetryDelay and trying again can succeed.
func (e *Error) Retryable() bool {
	return e.Code == codes.Unavailable || e.Code == codes.ResourceExhausted
}

// fromRPC turns a gRPC error into an *Error with its details decoded; context errors and
// nil pass through.
func fromRPC(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return errorFromStatus(st)
}

func errorFromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Metadata = d.GetReason(), d.GetMetadata()
		case *errdetails.RetryInfo:
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		case *errdetails.BadRequest:
			e.FieldViolations = append(e.FieldViolations, d.GetFieldViolations()...)
		case *errdetails.QuotaFailure:
			e.QuotaViolations = append(e.QuotaViolations, d.GetViolations()...)
		}
	}
	return e
}

// streamError is a refusal on an open stream (a StreamError event), as an *Error.
func streamError(se *pb.StreamError) *Error {
	e := &Error{
		Code:       codes.Code(se.GetCode()),
		Message:    se.GetMessage(),
		Reason:     se.GetReason(),
		Metadata:   se.GetMetadata(),
		RetryDelay: se.GetRetryDelay().AsDuration(),
	}
	e.status = status.New(e.Code, e.Message)
	return e
}

// ErrSessionClosed: the session's stream ended (or was closed) before the turn's result.
var ErrSessionClosed = errors.New("hotsession: the session's stream is closed")

// TurnFailedError is a turn whose result has is_error (e.g. subtype "interrupted").
type TurnFailedError struct {
	Result *pb.TurnResult
}

func (e *TurnFailedError) Error() string {
	return fmt.Sprintf("hotsession: turn failed (%s): %s", e.Result.GetSubtype(), e.Result.GetText())
}

// RetryPolicy bounds Retry.
type RetryPolicy struct {
	// Attempts in all, the first included (default 4).
	Attempts int
	// Backoff is the wait when the error names no RetryDelay (default 200ms, doubling).
	Backoff time.Duration
	// MaxDelay caps any one wait (default 30s).
	MaxDelay time.Duration
}

// Retry calls fn until it succeeds, fails with an error no retry can fix, or the
// attempts run out. UNAVAILABLE and RESOURCE_EXHAUSTED are retried after the
// RetryInfo delay hotsvc sent (or an exponential backoff); ctx bounds the whole.
func Retry(ctx context.Context, policy RetryPolicy, fn func(context.Context) error) error {
	if policy.Attempts <= 0 {
		policy.Attempts = 4
	}
	if policy.Backoff <= 0 {
		policy.Backoff = 200 * time.Millisecond
	}
	if policy.MaxDelay <= 0 {
		policy.MaxDelay = 30 * time.Second
	}
	backoff := policy.Backoff
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		var refused *Error
		if err == nil || attempt >= policy.Attempts || !errors.As(err, &refused) || !refused.Retryable() {
			return err
		}
		wait := refused.RetryDelay
		if wait <= 0 {
			wait, backoff = backoff, backoff*2
		}
		if wait > policy.MaxDelay {
			wait = policy.MaxDelay
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
	}
}
