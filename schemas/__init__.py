"""pydantic v2 models of the JSON formats run-graph reads and writes."""
from .api_prompt import ApiNode, ApiPrompt
from .results import ErrorReport, NodeReport, RunReport
from .ui_workflow import SubgraphDefinition, UILink, UINode, UIWorkflow

__all__ = ["ApiNode", "ApiPrompt", "ErrorReport", "NodeReport", "RunReport", "SubgraphDefinition",
           "UILink", "UINode", "UIWorkflow"]
