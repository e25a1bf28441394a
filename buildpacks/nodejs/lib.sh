# Shared by the nodejs buildpack's steps: reading package.json with node when the stack has
# it, else with sed (enough for package.json as npm writes it: no braces inside strings).

# package_json_field FILE FIELD: the string scripts.start ("start") or the names of the
# dependencies ("dependencies"), one a line.
package_json_field() {
  if command -v node >/dev/null 2>&1; then
    node -e '
      const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      if (process.argv[2] === "start") {
        const s = p.scripts && p.scripts.start;
        if (typeof s === "string") console.log(s);
      } else {
        for (const name of Object.keys(p.dependencies || {})) console.log(name);
      }' "$1" "$2"
    return
  fi
  # One line; then the object of "scripts" or "dependencies"; then its entries.
  case $2 in
  start)
    tr -d '\n\r' <"$1" | grep -o '"scripts"[ 	]*:[ 	]*{[^}]*}' |
      sed -n 's/.*"start"[ 	]*:[ 	]*"\(\([^"\\]\|\\.\)*\)".*/\1/p' | sed 's/\\"/"/g; s/\\\\/\\/g'
    ;;
  *)
    tr -d '\n\r' <"$1" | grep -o '"dependencies"[ 	]*:[ 	]*{[^}]*}' |
      sed 's/^[^{]*{//; s/}$//' | tr ',' '\n' | sed -n 's/^[ 	]*"\([^"]*\)".*/\1/p'
    ;;
  esac
}
