package huleedu

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed RPC: its status code and message, and the google.rpc details the server
// attached, decoded. A detail the server did not send is nil. Every client method returns an
// *Error for a failed RPC (context cancellation included, as codes.Canceled or
// codes.DeadlineExceeded).
type Error struct {
	Code    codes.Code
	Message string
	// ErrorInfo carries the machine-readable reason (e.g. "BATCH_NOT_FOUND",
	// "PREREQUISITES_NOT_MET"; docs/errors.md lists them) and the error domain ("batch.huleedu",
	// "conductor.huleedu").
	ErrorInfo *errdetails.ErrorInfo
	// BadRequest names each invalid field (INVALID_ARGUMENT).
	BadRequest *errdetails.BadRequest
	// PreconditionFailure names each unmet precondition (FAILED_PRECONDITION), e.g. type FLAG,
	// subject prompt_attached.
	PreconditionFailure *errdetails.PreconditionFailure
	// RetryInfo says how long to wait before trying again (RESOURCE_EXHAUSTED, UNAVAILABLE).
	RetryInfo *errdetails.RetryInfo
	// ResourceInfo names the resource concerned (a batch, a run, a backend).
	ResourceInfo *errdetails.ResourceInfo

	status   *status.Status
	sentinel bool
}

// Sentinels for errors.Is: errors.Is(err, huleedu.ErrNotFound) is true for any *Error with
// code NOT_FOUND.
var (
	ErrInvalidArgument    = sentinel(codes.InvalidArgument)
	ErrNotFound           = sentinel(codes.NotFound)
	ErrAlreadyExists      = sentinel(codes.AlreadyExists)
	ErrFailedPrecondition = sentinel(codes.FailedPrecondition)
	ErrAborted            = sentinel(codes.Aborted)
	ErrUnavailable        = sentinel(codes.Unavailable)
	ErrUnauthenticated    = sentinel(codes.Unauthenticated)
	ErrPermissionDenied   = sentinel(codes.PermissionDenied)
	ErrResourceExhausted  = sentinel(codes.ResourceExhausted)
	ErrDeadlineExceeded   = sentinel(codes.DeadlineExceeded)
	ErrInternal           = sentinel(codes.Internal)
)

func sentinel(code codes.Code) *Error {
	return &Error{Code: code, Message: code.String(), sentinel: true}
}

func (e *Error) Error() string {
	return fmt.Sprintf("huleedu: %s: %s", e.Code, e.Message)
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.sentinel && t.Code == e.Code
}

// GRPCStatus lets status.FromError and status.Code see through *Error.
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Reason is the ErrorInfo reason, or "" without an ErrorInfo.
func (e *Error) Reason() string { return e.ErrorInfo.GetReason() }

// FromError turns an error of a gRPC call into an *Error (nil stays nil; an *Error is returned
// as it is). Errors that carry no gRPC status become codes.Unknown.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, _ := status.FromError(err)
	out := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			out.ErrorInfo = d
		case *errdetails.BadRequest:
			out.BadRequest = d
		case *errdetails.PreconditionFailure:
			out.PreconditionFailure = d
		case *errdetails.RetryInfo:
			out.RetryInfo = d
		case *errdetails.ResourceInfo:
			out.ResourceInfo = d
		}
	}
	return out
}
