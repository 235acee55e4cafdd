"""Client of the kernel session server, for chatbots: run code, shape results for a model,
tool schemas and tool-call handling for OpenAI and Anthropic, code blocks, an MCP server.

    import kss_client

    async with kss_client.Client("http://127.0.0.1:8765", key) as c:
        s = c.session("alice")
        result = await s.run("6 * 7")
        blocks = kss_client.for_model(result, "anthropic")
"""

from .client import Client, Session
from .codeblocks import (
    BlockRun,
    extract_code_blocks,
    feedback_blocks,
    feedback_text,
    run_code_blocks,
)
from .errors import KssError, explain
from .model import ModelView, for_model, model_view
from .providers import Provider
from .results import (
    Event,
    EventType,
    ExecutionError,
    ExecutionResult,
    ExecutionStatus,
    FileChange,
    FileInfo,
    SessionInfo,
)
from .sync import SyncClient, SyncSession
from .tools import (
    LIST_FILES,
    RUN_PYTHON,
    handle_tool_call,
    handle_tool_calls,
    run_python_description,
    tool_schemas,
)

__all__ = [
    "LIST_FILES",
    "RUN_PYTHON",
    "BlockRun",
    "Client",
    "Event",
    "EventType",
    "ExecutionError",
    "ExecutionResult",
    "ExecutionStatus",
    "FileChange",
    "FileInfo",
    "KssError",
    "ModelView",
    "Provider",
    "Session",
    "SessionInfo",
    "SyncClient",
    "SyncSession",
    "explain",
    "extract_code_blocks",
    "feedback_blocks",
    "feedback_text",
    "for_model",
    "handle_tool_call",
    "handle_tool_calls",
    "model_view",
    "run_code_blocks",
    "run_python_description",
    "tool_schemas",
]
