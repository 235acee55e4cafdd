"""Code blocks from a model's markdown reply: extraction (pure) and real runs."""

from __future__ import annotations

from kss_client import (
    Client,
    extract_code_blocks,
    feedback_blocks,
    feedback_text,
    run_code_blocks,
)

REPLY = """Let me compute it.

```python
total = sum(range(10))
print(total)
```

Some shell you should not run:

```bash
rm -rf /
```

   ~~~~ py title="second"
   total * 2
   ~~~~

```
untagged = True
```

````python
s = '''```'''
len(s)
````

```python
cut off mid-block
"""


def test_python_blocks_in_order_and_nothing_else() -> None:
    assert extract_code_blocks(REPLY) == [
        "total = sum(range(10))\nprint(total)",
        "total * 2",
        "s = '''```'''\nlen(s)",
    ]


def test_untagged_blocks_on_request() -> None:
    blocks = extract_code_blocks(REPLY, include_untagged=True)
    assert "untagged = True" in blocks and len(blocks) == 4


def test_no_blocks() -> None:
    assert extract_code_blocks("No code here, just `inline`.") == []
    assert feedback_text([]).startswith("Your reply had no ```python code block")


async def test_blocks_run_in_order_and_stop_at_the_first_error(client: Client) -> None:
    s = client.session("blocks")
    reply = (
        "```python\nvalue = 20\n```\n"
        "```python\nvalue + 1\n```\n"
        "```python\nvalue / 0\n```\n"
        "```python\nprint('never')\n```\n"
    )
    runs = await run_code_blocks(s, reply)
    assert [r.ran for r in runs] == [True, True, True, False]
    assert runs[1].result is not None and runs[1].result.result == {"text/plain": "21"}
    assert not runs[2].ok
    text = feedback_text(runs)
    assert text.startswith("I ran the 4 Python block(s) of your reply.")
    assert "[block 2]\nstatus: ok" in text and "ZeroDivisionError: division by zero" in text
    assert "[block 4] not run: an earlier block failed." in text
    assert "never" not in text.split("[block 4]")[0].split("[block 3]")[1]
    going_on = await run_code_blocks(s, reply, stop_on_error=False)
    assert [r.ran for r in going_on] == [True] * 4 and going_on[3].result is not None
    assert going_on[3].result.stdout == "never\n"


async def test_feedback_carries_figures_for_vision_models(client: Client) -> None:
    reply = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\n```"
    runs = await run_code_blocks(client.session("blocks-figure"), reply)
    blocks = feedback_blocks(runs, "anthropic")
    assert [b["type"] for b in blocks] == ["text", "image"]
    assert "images: 1 attached" in blocks[0]["text"]
