// A web app of Node's http module only: answers every request on $PORT with a greeting.
const http = require("http");

const port = Number(process.env.PORT || 8080);
const index = process.env.INSTANCE_INDEX || "?";
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    res.end(`Hello from node-app, instance ${index}\n`);
  })
  .listen(port, "0.0.0.0", () => console.log(`node-app listening on port ${port}`));
