"""pydantic v2 models of the JSON formats run-graph reads and writes."""
from .api_prompt import ApiNode, ApiPrompt
from .report import FileReport, NodeReport, ProblemReport, RunReport
from .ui_workflow import SubgraphDefinition, UILink, UINode, UIWorkflow

__all__ = ["ApiNode", "ApiPrompt", "FileReport", "NodeReport", "ProblemReport", "RunReport",
           "SubgraphDefinition", "UILink", "UINode", "UIWorkflow"]
