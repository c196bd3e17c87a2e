"""The engine: pure workflow decisions — definition rules, conditions, transition selection.

Nothing here knows Flask, the database or the queue; everything takes and returns plain data,
so every rule of the product design (§2) is unit-testable in microseconds.
"""

from .conditions import (
    OPERATOR_LABELS,
    OPERATORS,
    VALUELESS,
    compare,
    evaluate_condition,
    explain_condition,
    field_suggestions,
    first_failed_condition,
)
from .rules import (
    CAPTURE_NAME_RE,
    CODE_RE,
    DEFAULT_LIMITS,
    FIELD_RE,
    MAX_DESCRIPTION,
    Limits,
    RuleError,
    check_code,
    check_condition,
    check_description,
    normalize_code,
    validate_workflow,
)
from .selection import (
    CompiledCondition,
    CompiledTransition,
    CompiledWorkflow,
    Decision,
    StateInfo,
    Verdict,
    build_context,
    capture_vars,
    compile_workflow,
    event_view,
    explain,
    manual_refusal,
    select_transition,
    timeout_due,
    timeout_transition,
)

__all__ = [
    "CAPTURE_NAME_RE", "CODE_RE", "DEFAULT_LIMITS", "FIELD_RE", "MAX_DESCRIPTION", "OPERATORS",
    "OPERATOR_LABELS", "Limits",
    "VALUELESS", "CompiledCondition", "CompiledTransition", "CompiledWorkflow", "Decision",
    "RuleError", "StateInfo", "Verdict", "build_context", "capture_vars", "check_code",
    "check_condition", "check_description", "compare", "compile_workflow", "evaluate_condition",
    "explain",
    "event_view", "explain_condition", "field_suggestions", "first_failed_condition",
    "manual_refusal", "normalize_code", "select_transition", "timeout_due", "timeout_transition",
    "validate_workflow",
]
