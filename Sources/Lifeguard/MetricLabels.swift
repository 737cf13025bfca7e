import LifeguardMetrics

// This file imports only LifeguardMetrics, so these names reach the label enums that share their names with the
// pool core's reasons (the module's class `LifeguardMetrics` hides them from qualified lookup).
typealias ErrorReasonLabel = ConnectionErrorReason
typealias CloseReasonLabel = ConnectionCloseReason
