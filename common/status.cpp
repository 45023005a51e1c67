#include "common/status.h"

namespace prfaas {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

Status::Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {
  if (code_ == StatusCode::kOk) message_.clear();
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(code_));
  if (!message_.empty()) {
    s += ": ";
    s += message_;
  }
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

std::ostream& operator<<(std::ostream& os, const Status& s) {
  return os << s.ToString();
}

#define PRFAAS_STATUS_CTOR_(Name, Code)                  \
  Status Name(std::string message) {                     \
    return Status(StatusCode::Code, std::move(message)); \
  }
PRFAAS_STATUS_CTOR_(InvalidArgument, kInvalidArgument)
PRFAAS_STATUS_CTOR_(NotFound, kNotFound)
PRFAAS_STATUS_CTOR_(AlreadyExists, kAlreadyExists)
PRFAAS_STATUS_CTOR_(FailedPrecondition, kFailedPrecondition)
PRFAAS_STATUS_CTOR_(ResourceExhausted, kResourceExhausted)
PRFAAS_STATUS_CTOR_(OutOfRange, kOutOfRange)
PRFAAS_STATUS_CTOR_(Unavailable, kUnavailable)
PRFAAS_STATUS_CTOR_(DeadlineExceeded, kDeadlineExceeded)
PRFAAS_STATUS_CTOR_(Cancelled, kCancelled)
PRFAAS_STATUS_CTOR_(Aborted, kAborted)
PRFAAS_STATUS_CTOR_(DataLoss, kDataLoss)
PRFAAS_STATUS_CTOR_(Internal, kInternal)
PRFAAS_STATUS_CTOR_(Unimplemented, kUnimplemented)
PRFAAS_STATUS_CTOR_(PermissionDenied, kPermissionDenied)
PRFAAS_STATUS_CTOR_(Unauthenticated, kUnauthenticated)
#undef PRFAAS_STATUS_CTOR_

}  // namespace prfaas
