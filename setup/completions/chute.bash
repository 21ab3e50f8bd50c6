# bash completion for chute (made by `chute generate`: do not edit)
_chute() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} opts= takes=
	COMPREPLY=()
	if ((COMP_CWORD == 1)); then
		mapfile -t COMPREPLY < <(compgen -W 'init sink list status restore ls find diff stats serve key verify forget prune scrub generate help --help --version' -- "$cur")
		return
	fi
	case ${COMP_WORDS[1]} in
	init) opts='-k --key-file --remote --help' takes=' -k --key-file --remote ' ;;
	sink) opts='--json -q --quiet -v --verbose -e --exclude --exclude-file --files-from --exclude-caches --no-exclude-caches -x --one-file-system -r --remote -k --key-file --domain -n --node --limit-upload --limit-download -j --threads --compression --fs-snapshot --accept-rollback --progress --tag --help' takes=' -e --exclude --exclude-file --files-from -r --remote -k --key-file --domain -n --node --limit-upload --limit-download -j --threads --compression --fs-snapshot --tag ' ;;
	list) opts='--json --tag --path -r --remote -k --key-file --domain -n --node --accept-rollback --help' takes=' --tag --path -r --remote -k --key-file --domain -n --node ' ;;
	status) opts='--json -r --remote -k --key-file --domain -n --node --help' takes=' -r --remote -k --key-file --domain -n --node ' ;;
	restore) opts='-t --to -f --force --path -r --remote -k --key-file --domain -n --node --limit-download -j --threads --accept-rollback --json -q --quiet -v --verbose --help' takes=' -t --to --path -r --remote -k --key-file --domain -n --node --limit-download -j --threads ' ;;
	ls) opts='-l --long --json --path -r --remote -k --key-file --domain -n --node --limit-download --accept-rollback --help' takes=' --path -r --remote -k --key-file --domain -n --node --limit-download ' ;;
	find) opts='--snapshot --json --path -r --remote -k --key-file --domain -n --node --limit-download --accept-rollback --help' takes=' --snapshot --path -r --remote -k --key-file --domain -n --node --limit-download ' ;;
	diff) opts='--json --path -r --remote -k --key-file --domain -n --node --limit-download --accept-rollback --help' takes=' --path -r --remote -k --key-file --domain -n --node --limit-download ' ;;
	stats) opts='--json --path -r --remote -k --key-file --domain -n --node --limit-download --accept-rollback --help' takes=' --path -r --remote -k --key-file --domain -n --node --limit-download ' ;;
	serve) opts='-l --listen -s --store -j --threads --allow --allow-file --name --open --append-only --admin-key-file --quota --max-window --timeout --max-connections --max-per-address --scrub-every --scrub-rate --rate-limit --rate-burst --ui-allow --ui-token-file --ui-stale --log-requests --help' takes=' -l --listen -s --store -j --threads --allow --allow-file --name --admin-key-file --quota --max-window --timeout --max-connections --max-per-address --scrub-every --scrub-rate --rate-limit --rate-burst --ui-allow --ui-token-file --ui-stale ' ;;
	key) opts='-k --key-file -n --node --domain -r --remote --help' takes=' -k --key-file -n --node --domain -r --remote ' ;;
	verify) opts='--all --read-data --read-data-subset --path -r --remote -k --key-file --domain -n --node --limit-download -j --threads --accept-rollback --json -q --quiet --help' takes=' --read-data-subset --path -r --remote -k --key-file --domain -n --node --limit-download -j --threads ' ;;
	forget) opts='--keep-last --keep-hourly --keep-daily --keep-weekly --keep-monthly --keep-yearly --keep-tag --tag --dry-run -r --remote -k --key-file --domain -n --node --admin-key-file --json -q --quiet --help' takes=' --keep-last --keep-hourly --keep-daily --keep-weekly --keep-monthly --keep-yearly --keep-tag --tag -r --remote -k --key-file --domain -n --node --admin-key-file ' ;;
	prune) opts='--grace --dry-run --repack-threshold -r --remote -k --key-file --domain -n --node --limit-upload --limit-download --admin-key-file --accept-rollback --json -q --quiet --help' takes=' --grace --repack-threshold -r --remote -k --key-file --domain -n --node --limit-upload --limit-download --admin-key-file ' ;;
	scrub) opts='-s --store --json -q --quiet --help' takes=' -s --store ' ;;
	generate) opts='--man --bash --zsh --fish --help' takes=' --man --bash --zsh --fish ' ;;
	esac
	# An option's value and the arguments: the shell's own file names.
	[[ $takes == *" $prev "* ]] && return
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
	fi
}
complete -o bashdefault -o default -F _chute chute
