/* The playground: stream a chat answer from the portal's session route, token by token. */
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("composer");
  const message = document.getElementById("message");
  const transcript = document.getElementById("transcript");
  const status = document.getElementById("chat-status");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const temperature = document.getElementById("temperature");
  const temperatureValue = document.getElementById("temperature-value");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  let history = [];
  let running = null;

  temperature.addEventListener("input", function () {
    temperatureValue.textContent = Number(temperature.value).toFixed(1);
  });

  function addTurn(role, text) {
    const empty = document.getElementById("transcript-empty");
    if (empty) {
      empty.remove();
    }
    const turn = document.createElement("div");
    turn.className = "turn " + role;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    turn.appendChild(body);
    transcript.appendChild(turn);
    return turn;
  }

  function note(turn, text) {
    const usage = document.createElement("small");
    usage.className = "usage";
    usage.textContent = text;
    turn.appendChild(usage);
  }

  function usageText(usage) {
    return usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion = " +
      usage.total_tokens + " tokens";
  }

  function busy(on) {
    send.disabled = on;
    stop.disabled = !on;
    transcript.setAttribute("aria-busy", on ? "true" : "false");
  }

  function requestBody() {
    const messages = [];
    const system = document.getElementById("system").value.trim();
    if (system) {
      messages.push({ role: "system", content: system });
    }
    return {
      model: document.getElementById("model").value.trim(),
      messages: messages.concat(history),
      temperature: Number(temperature.value),
    };
  }

  /* Apply one SSE event to the answer; returns true at [DONE]. */
  function apply(event, turn, text) {
    const data = event.split("\n").filter(function (line) { return line.startsWith("data: "); })
      .map(function (line) { return line.slice(6); }).join("\n");
    if (!data) {
      return false;
    }
    if (data === "[DONE]") {
      return true;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) {
      turn.classList.add("failed");
      note(turn, "The upstream failed mid-answer: " + chunk.error.message);
      return false;
    }
    if (chunk.choices && chunk.choices.length && chunk.choices[0].delta.content) {
      text.textContent += chunk.choices[0].delta.content;
    }
    if (chunk.usage) {
      note(turn, usageText(chunk.usage));
      turn.dataset.totalTokens = chunk.usage.total_tokens;
    }
    return false;
  }

  async function readStream(response, turn) {
    const text = turn.querySelector(".text");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    while (!done) {
      const part = await reader.read();
      if (part.done) {
        break;
      }
      buffer += decoder.decode(part.value, { stream: true });
      let end = buffer.indexOf("\n\n");
      while (end >= 0 && !done) {
        done = apply(buffer.slice(0, end), turn, text);
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf("\n\n");
      }
    }
    return text.textContent;
  }

  async function ask() {
    const question = message.value.trim();
    if (!question || running) {
      return;
    }
    history.push({ role: "user", content: question });
    addTurn("user", question);
    message.value = "";
    const turn = addTurn("assistant", "");
    running = new AbortController();
    busy(true);
    status.textContent = "Answering…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify(requestBody()),
        signal: running.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        const failure = await response.json().catch(function () { return {}; });
        turn.classList.add("failed");
        note(turn, (failure.error && failure.error.message) || "The request failed (" + response.status + ").");
        status.textContent = "The request failed.";
        history.pop();
        return;
      }
      const answer = await readStream(response, turn);
      history.push({ role: "assistant", content: answer });
      status.textContent = "Done.";
    } catch (error) {
      if (error.name === "AbortError") {
        const answer = turn.querySelector(".text").textContent;
        history.push({ role: "assistant", content: answer });
        turn.classList.add("stopped");
        note(turn, "Stopped: charged for the tokens streamed so far.");
        status.textContent = "Stopped.";
      } else {
        turn.classList.add("failed");
        note(turn, "The connection failed: " + error.message);
        status.textContent = "The connection failed.";
      }
    } finally {
      running = null;
      busy(false);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    ask();
  });
  stop.addEventListener("click", function () {
    if (running) {
      running.abort();
    }
  });
  document.getElementById("reset").addEventListener("click", function () {
    if (running) {
      running.abort();
    }
    history = [];
    transcript.replaceChildren();
    status.textContent = "New chat.";
    message.focus();
  });
  message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      ask();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && running) {
      running.abort();
    }
  });
});

/* The tabs (Chat, Image), with arrow keys as the WAI-ARIA tabs pattern has them. */
document.addEventListener("DOMContentLoaded", function () {
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));

  function select(tab) {
    tabs.forEach(function (each) {
      const chosen = each === tab;
      each.setAttribute("aria-selected", chosen ? "true" : "false");
      each.tabIndex = chosen ? 0 : -1;
      document.getElementById(each.getAttribute("aria-controls")).hidden = !chosen;
    });
    tab.focus();
  }

  tabs.forEach(function (tab, index) {
    tab.addEventListener("click", function () { select(tab); });
    tab.addEventListener("keydown", function (event) {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) {
        event.preventDefault();
        select(tabs[(index + step + tabs.length) % tabs.length]);
      }
    });
  });
});

/* The image tab: one image per request, shown when it arrives. */
document.addEventListener("DOMContentLoaded", function () {
  const form = document.getElementById("image-form");
  const status = document.getElementById("image-status");
  const results = document.getElementById("image-results");
  const button = document.getElementById("image-generate");
  const csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const prompt = document.getElementById("image-prompt").value.trim();
    if (!prompt) {
      return;
    }
    button.disabled = true;
    status.textContent = "Generating…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        credentials: "same-origin",
        body: JSON.stringify({
          prompt: prompt,
          model: document.getElementById("image-model").value.trim() || undefined,
          size: document.getElementById("image-size").value,
        }),
      });
      const reply = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        status.textContent = (reply.error && reply.error.message) || "The request failed (" + response.status + ").";
        return;
      }
      const empty = document.getElementById("image-empty");
      if (empty) {
        empty.remove();
      }
      const figure = document.createElement("figure");
      const image = document.createElement("img");
      image.src = "data:image/png;base64," + reply.data[0].b64_json;
      image.alt = prompt;
      const caption = document.createElement("figcaption");
      caption.textContent = prompt;
      figure.append(image, caption);
      results.prepend(figure);
      status.textContent = "Done.";
    } catch (error) {
      status.textContent = "The connection failed: " + error.message;
    } finally {
      button.disabled = false;
    }
  });
});
